"""Hypothesis strategies for webhooks as a sender might write them: the repository's sample payloads, arbitrary JSON
made of their words (lone surrogates, integers beyond 64 bits, number literals no encoder writes), samples with
values replaced, and the wire forms of a JSON value. Shared by the ingest fuzz tests and the pipeline's."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from typing import Any

from hypothesis import strategies as st

from devtools.samples import payloads_dir
from services.tools.replay import load_bodies
from tests.helpers.support import json_slots


@cache
def sample_bodies() -> tuple[bytes, ...]:
    """The shared sample webhooks as Meta sends them (compact, ASCII, '/' escaped)."""
    bodies = tuple(body for _name, body in load_bodies([payloads_dir()]))
    assert len(bodies) >= 50, f"sample payloads missing under {payloads_dir()}"
    return bodies


# Deferred: the files are read when the first case is drawn, not when the module is collected.
SAMPLES = st.deferred(lambda: st.sampled_from(sample_bodies()))
SAMPLE_VALUES = SAMPLES.map(json.loads)


@cache
def sample_keys() -> list[str]:
    """Every object key of the sample payloads: the words a fuzzed body should be made of."""
    return sorted(
        {key for body in sample_bodies() for _container, key in json_slots(json.loads(body)) if isinstance(key, str)}
    )


DOMAIN_KEYS = st.deferred(lambda: st.sampled_from(sample_keys()))
# Number literals json.dumps never writes (a float beyond the double range decodes to ±inf), carried through the
# encoder as marked strings and unquoted by `encoded`.
RAW_LITERAL = re.compile(r'"@raw@([^"@]+)@raw@"')
RAW_LITERALS = st.sampled_from(["1e400", "-1E+400", "1.7976931348623157e308", "1e-400", "-0", "-0.0", "0e0"]).map(
    lambda literal: f"@raw@{literal}@raw@"
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**80)  # beyond 64 bits: orjson refuses them, the envelope must not
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)  # lone surrogates included
    | st.sampled_from(["whatsapp_business_account", "messages", "", "1739230955", "16505551234"])
    | RAW_LITERALS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(DOMAIN_KEYS | st.text(max_size=6), children),
    max_leaves=25,
)
OTHER_OBJECTS: st.SearchStrategy[Any] = st.sampled_from(
    ["page", "instagram", "WHATSAPP_BUSINESS_ACCOUNT", "whatsapp_business_account ", "", None, 0, [], {}]
)


@st.composite
def mutated_samples(draw: st.DrawFn) -> Any:
    """A real sample with one to three of its values replaced, dropped, emptied or repeated many times."""
    body = copy.deepcopy(draw(SAMPLE_VALUES))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = list(json_slots(body))
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "drop", "empty", "repeat", "wrap"]))
        if action == "replace":
            container[key] = draw(JSON_VALUES)
        elif action == "drop":
            del container[key]
        elif action == "empty":
            container[key] = draw(st.sampled_from([[], {}, "", 0, None]))
        elif action == "repeat":  # huge arrays: may exceed the body cap
            container[key] = [container[key]] * draw(st.integers(min_value=2, max_value=300))
        else:
            container[key] = {"value": container[key]}
    return body


@st.composite
def encoded(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as bytes, in one of the wire forms a sender might use (valid JSON or not)."""
    value = draw(values)
    how = draw(st.sampled_from(["compact", "meta", "utf-8", "indented", "utf-16", "bom"]))
    ascii_only = how in ("compact", "meta", "indented")
    text = RAW_LITERAL.sub(r"\1", json.dumps(value, ensure_ascii=ascii_only, indent=2 if how == "indented" else None))
    if how == "meta":
        return text.replace("/", "\\/").encode()
    if how == "utf-16":
        return text.encode("utf-16", "surrogatepass")
    raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate gives bytes that are not UTF-8
    return b"\xef\xbb\xbf" + raw if how == "bom" else raw
