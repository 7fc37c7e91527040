"""One refusal hierarchy: every refusal an operator can meet carries its HTTP status and exit code, and each adapter
registers one handler for the base (a list of kinds per adapter went stale: the console's lacked two)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from services.actions.layer import Actions
from services.core.keyring import RewrapRefused
from services.core.refusals import ActionRefused, Forbidden, NotFound, PersonRequired, ReasonRequired
from services.governance.erasure import ErasureError, ErasureOutcome, UnknownErasure
from services.governance.holds import HoldError
from services.governance.metrics import RetentionMetrics
from services.review.conversation import GroupRequired

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("refusal", "status", "exit_code"),
    [
        (Forbidden, 403, 2),
        (ReasonRequired, 400, 2),
        (PersonRequired, 400, 2),
        (GroupRequired, 400, 2),
        (HoldError, 400, 2),
        (ErasureError, 400, 2),
        (RewrapRefused, 400, 2),
        (NotFound, 404, 1),
        (UnknownErasure, 404, 1),
    ],
)
def test_each_refusal_carries_its_status_and_exit_code(
    refusal: type[ActionRefused], status: int, exit_code: int
) -> None:
    assert issubclass(refusal, ActionRefused)
    assert (refusal.http_status, refusal.exit_code) == (status, exit_code)


def all_refusals(base: type[ActionRefused] = ActionRefused) -> set[type[ActionRefused]]:
    found = set(base.__subclasses__())
    for sub in list(found):
        found |= all_refusals(sub)
    return found


def test_every_refusal_is_a_client_error_with_an_exit_code() -> None:
    for refusal in all_refusals():
        assert 400 <= refusal.http_status < 500, refusal
        assert refusal.exit_code in (1, 2), refusal


def registered_handlers(path: Path) -> set[str]:
    """The exception types an adapter module registers a handler for (``add_exception_handler(X, …)``,
    ``@app.exception_handler(X)``), and every name listed in a tuple or list (how a list of kinds is iterated into
    handlers)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"add_exception_handler", "exception_handler"}
            and node.args
        ):
            names.add(ast.unparse(node.args[0]))
        if isinstance(node, ast.Tuple | ast.List):
            names |= {element.id for element in node.elts if isinstance(element, ast.Name)}
    return names


@pytest.mark.parametrize("adapter", ["services/console/errors.py", "services/retention/api/factory.py"])
def test_an_adapter_handles_the_base_and_no_single_refusal(adapter: str) -> None:
    handled = registered_handlers(ROOT / adapter)
    names = {refusal.__name__ for refusal in all_refusals()}
    assert not handled & names, f"{adapter} registers single refusals {handled & names}: register ActionRefused"
    source = (ROOT / adapter).read_text()
    assert "ActionRefused" in source


class CountingActions(Actions):
    def __init__(self) -> None:
        super().__init__(cast(Any, None), RetentionMetrics(CollectorRegistry()))


@pytest.mark.parametrize(
    ("status", "label"),
    [
        ("completed", "completed"),
        ("blocked", "blocked_by_hold"),
        ("refused", "refused"),
        ("in_progress", "in_progress"),  # another process holds the request: it was counted as blocked by a hold
    ],
)
def test_erasure_outcomes_are_counted_under_their_own_label(status: str, label: str) -> None:
    actions = CountingActions()
    actions._count_erasures([ErasureOutcome(request_ref="r", status=status, subject_refs=[])])
    assert actions.metrics.erasures.labels(label)._value.get() == 1
    others = {"completed", "blocked_by_hold", "refused", "in_progress"} - {label}
    assert all(actions.metrics.erasures.labels(other)._value.get() == 0 for other in others)
