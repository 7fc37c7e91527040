"""The refusal grounds are written down in three places that must agree: the Python type the action and the API
validate against, the database's CHECK constraint (migration 0007), and the CLI's choices."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from services.cli import build_parser
from services.governance.grounds import REFUSAL_GROUNDS


def test_the_database_accepts_exactly_the_grounds_of_the_code() -> None:
    sql = (resources.files("services.core.migrations") / "0007_erasure_workflow.sql").read_text(encoding="utf-8")
    listed = re.search(r"refusal_ground IN \(([^)]*)\)", sql)
    assert listed is not None
    assert tuple(re.findall(r"'([a-z_]+)'", listed.group(1))) == REFUSAL_GROUNDS


def test_the_cli_offers_exactly_the_grounds_of_the_code() -> None:
    for ground in REFUSAL_GROUNDS:
        args = build_parser().parse_args(["erasure", "refuse", "R-1", "--ground", ground])
        assert (args.request_ref, args.ground) == ("R-1", ground)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["erasure", "refuse", "R-1", "--ground", "we_would_rather_not"])


def test_the_grounds_are_the_laws() -> None:
    # Art. 17(3) (a)-(e) and Art. 12(5): six, none invented.
    assert len(REFUSAL_GROUNDS) == 6
    assert "legal_claims" in REFUSAL_GROUNDS
    assert "manifestly_unfounded_or_excessive" in REFUSAL_GROUNDS
