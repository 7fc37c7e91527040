"""How a keyword search chooses between walking the messages in time order and gathering every match
(services/review/search.py), and the index the walk needs (migration 0030)."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.schema import migration_files
from services.core.vocabulary import MESSAGE_KINDS
from services.review.search import (
    KEYWORD_KINDS_SQL,
    KEYWORD_WALK_BUDGET,
    combined_share,
    keyword_gather_sql,
    keyword_walk_sql,
    walk_budget_for,
    walk_first,
)


@pytest.mark.parametrize(
    ("share", "limit", "budget", "walks"),
    [
        pytest.param(0.5, 500, 20_000, True, id="a word of half the pairs fills a page within a thousand messages"),
        pytest.param(0.025, 500, 20_000, True, id="a page within the budget exactly"),
        pytest.param(0.024, 500, 20_000, False, id="a page just beyond the budget: gathered"),
        pytest.param(0.001, 500, 20_000, False, id="a rare word: gathered"),
        pytest.param(0.0, 500, 20_000, False, id="no pair holds the words (or no statistics)"),
        pytest.param(0.01, 10, 20_000, True, id="a short page needs fewer messages"),
        pytest.param(1.0, 500, 100, False, id="a budget below the page"),
    ],
)
def test_a_search_walks_when_the_words_promise_a_page_within_the_budget(
    share: float, limit: int, budget: int, walks: bool
) -> None:
    assert walk_first(share, limit, budget) is walks


def test_the_walk_names_the_message_kinds_as_the_index_of_migration_0030_does() -> None:
    """PostgreSQL walks a partial index only when the query's condition is the index's: the same kinds, written
    the same way."""
    (sql,) = [text for _version, name, text in migration_files() if name.startswith("0030_")]
    predicate = re.search(r"WHERE (kind IN \([^)]*\))", sql)
    assert predicate is not None
    assert f"e.{predicate.group(1)}" == KEYWORD_KINDS_SQL
    assert set(re.findall(r"'(\w+)'", predicate.group(1))) == MESSAGE_KINDS  # every kind a keyword search returns


def test_both_statements_bind_every_value_and_order_events_of_one_second_by_id() -> None:
    walk = keyword_walk_sql("e.phone_number_id = $1", tokens="$2", budget="$4", limit="$3")
    gather = keyword_gather_sql("e.phone_number_id = $1", tokens="$2", limit="$3")
    for sql in (walk, gather):
        assert "$2::bigint[]" in sql
        assert "LIMIT $3" in sql
        assert sql.endswith("ORDER BY e.event_time, e.event_id")
    assert "LIMIT $4" in walk
    assert "LIMIT $4" not in gather


@pytest.mark.parametrize(
    ("shares", "combined"),
    [
        pytest.param([], 0.0, id="no word"),
        pytest.param([0.3], 0.3, id="one word: its share"),
        pytest.param([0.16, 0.04], 0.04 * 0.4, id="two: the rarer, times the square root of the other"),
        pytest.param([0.04, 0.16], 0.04 * 0.4, id="in any order"),
        pytest.param([0.0, 0.5], 0.0, id="a word no row holds"),
        pytest.param([1.0, 1.0, 1.0], 1.0, id="words every row holds"),
        pytest.param([0.5, 0.25, 0.0625], 0.0625 * 0.5 * 0.5**0.25, id="three: square root, then fourth root"),
    ],
)
def test_the_words_share_backs_off_from_the_rarest(shares: list[float], combined: float) -> None:
    assert combined_share(shares) == pytest.approx(combined)


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
@settings(max_examples=200)
def test_the_words_share_lies_between_their_product_and_the_rarest_words(shares: list[float]) -> None:
    """Between independence (every word's share multiplied) and one word implying the others (the rarest's)."""
    found = combined_share(shares)
    assert math.prod(shares) - 1e-12 <= found <= min(shares) + 1e-12


@pytest.mark.parametrize(
    ("limit", "budget"),
    [
        pytest.param(500, KEYWORD_WALK_BUDGET, id="the console's page: the budget"),
        pytest.param(5_000, KEYWORD_WALK_BUDGET, id="four messages per hit, the budget exactly"),
        pytest.param(10_000, 40_000, id="the admin API's deepest: four messages per hit"),
    ],
)
def test_a_deep_page_walks_four_messages_per_hit(limit: int, budget: int) -> None:
    assert walk_budget_for(limit) == budget
    assert walk_first(0.25, limit, walk_budget_for(limit))  # a word a quarter of the rows hold walks
