"""Records with more than a handful of fields are built by keyword: every dataclass of services/ with more than
five fields is ``kw_only``, so a call site cannot swap two arguments of the same type unnoticed."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from services.review.search import SearchFilter

pytestmark = pytest.mark.unit

SERVICES = Path(__file__).resolve().parents[2] / "services"
HANDFUL = 5


def dataclass_decorator(node: ast.ClassDef) -> ast.expr | None:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Name) and target.id == "dataclass":
            return decorator
    return None


def is_kw_only(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Call) and any(
        k.arg == "kw_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in decorator.keywords
    )


def field_count(node: ast.ClassDef) -> int:
    return sum(
        1
        for statement in node.body
        if isinstance(statement, ast.AnnAssign)
        and isinstance(statement.target, ast.Name)
        and "ClassVar" not in ast.unparse(statement.annotation)
    )


def positional_records(source: str) -> list[tuple[int, str, int]]:
    """(line, name, fields) of each dataclass with more than a handful of fields that is not keyword-only."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and (decorator := dataclass_decorator(node)) is not None:
            count = field_count(node)
            if count > HANDFUL and not is_kw_only(decorator):
                found.append((node.lineno, node.name, count))
    return found


def test_wide_records_are_keyword_only() -> None:
    offenders = [
        f"{path.relative_to(SERVICES.parent)}:{line}: {name} ({count} fields)"
        for path in sorted(SERVICES.rglob("*.py"))
        for line, name, count in positional_records(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "add kw_only=True to the @dataclass of:\n" + "\n".join(offenders)


def record(decorator: str, fields: int) -> str:
    return f"{decorator}\nclass A:\n" + "".join(f"    f{i}: int\n" for i in range(fields))


@pytest.mark.parametrize(
    ("source", "found"),
    [
        pytest.param(record("@dataclass", 6), [(2, "A", 6)], id="six, positional"),
        pytest.param(record("@dataclass(frozen=True, slots=True)", 9), [(2, "A", 9)], id="nine, frozen"),
        pytest.param(record("@dataclass(kw_only=True)", 9), [], id="keyword-only"),
        pytest.param(record("@dataclass", 5), [], id="a handful"),
    ],
)
def test_the_scan(source: str, found: list[tuple[int, str, int]]) -> None:
    assert positional_records(source) == found


def test_a_search_filter_refuses_positional_arguments() -> None:
    with pytest.raises(TypeError):
        SearchFilter("106540352242922")  # type: ignore[call-arg]
    assert all(f.kw_only for f in dataclasses.fields(SearchFilter))
