"""The retention admin API (``/v1/``), bearer tokens with roles; OpenAPI at ``/openapi.json`` (with a token) and on
the ops port.

A thin adapter over :mod:`services.actions.layer`: it authenticates the token, translates the request into an
action's arguments and its result or refusal into JSON. ``reader`` tokens may search and retrieve (with a reason,
audited); ``dpo`` tokens may also erase, hold, export and run retention. The token's name is the actor written to
the audit log.

Layout (one module per concern, one router per resource):

- :mod:`.factory`: :func:`create_admin_app` wires the lifespan (the actions, the ops server), the middleware, the
  one refusal handler and the routers;
- :mod:`.gate`: :class:`AdminGate`, who is calling and may they, decided before the body is read;
- :mod:`.dependencies`: what a route takes from ``app.state`` through ``Depends`` (the actions once ready, the
  caller the gate authenticated);
- :mod:`.requests` and :mod:`.responses`: the typed bodies in and out, so ``/openapi.json`` documents every answer,
  errors included;
- :mod:`.routers`: ``messages`` (a person's conversation, a group's timeline), ``search``, ``erasures``, ``holds``,
  ``exports``, ``retention`` (a run), ``audit``, and ``health`` (the probes).

Refusals come before the request body is read (:class:`AdminGate`, a pure ASGI middleware in front of FastAPI,
which would otherwise read and parse the body before running any dependency): a body announced over
``max_body_bytes`` is 413 first, whoever sends it; then a missing or unknown token is 401 and a known token without
the role the route's action needs is 403; a chunked body is stopped at the limit (413) as it is read. Each is
counted (``wa_retention_api_refusals_total``) and logged, without the token. Only ``/healthz`` and ``/readyz``
answer without a token; ``/metrics`` is on the ops port (``ops_port``), as the console's.
"""

from services.retention.api.factory import create_admin_app

__all__ = ["create_admin_app"]
