"""What the admin API's routes take from the application, through ``Depends``: nothing is shared by closure.

:func:`create_admin_app` puts the :class:`Actions` in ``app.state.actions`` once its lifespan has opened the
archive; :class:`~services.retention.api.gate.AdminGate` puts the authenticated caller in the request's state. A
test mounts one router alone and replaces either with ``app.dependency_overrides``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request

from services.actions.layer import Actions, Operator


def is_ready(app: FastAPI) -> bool:
    """Whether the lifespan has opened the archive (``/readyz`` on both ports)."""
    return getattr(app.state, "actions", None) is not None


def ready_actions(request: Request) -> Actions:
    """The application's actions; 503 ``not ready`` until its lifespan has opened the archive."""
    actions: Actions | None = getattr(request.app.state, "actions", None)
    if actions is None:
        raise HTTPException(503, "not ready")
    return actions


def operator_of(request: Request) -> Operator:
    """The caller :class:`~services.retention.api.gate.AdminGate` authenticated (and authorised for the route's
    action)."""
    operator: Operator | None = request.scope.get("state", {}).get("operator")
    if operator is None:  # only without the gate, which create_admin_app always installs
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return operator


ReadyActions = Annotated[Actions, Depends(ready_actions)]
Caller = Annotated[Operator, Depends(operator_of)]
