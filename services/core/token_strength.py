"""How much a bearer token can be guessed: at least 128 bits of randomness, or it is refused at start-up.

A token is only as strong as the randomness it was drawn from, which cannot be measured from one value; this
estimates an upper bound from its length and the alphabet its characters come from (hex 4 bits a character,
base64url 6, and so on) and refuses what is obviously not random (few distinct characters, a repeated pattern).
``secrets.token_hex(16)`` (32 hex digits) is the shortest that passes; ``secrets.token_urlsafe(32)`` (43 characters,
256 bits) is what the documentation tells operators to draw (a 22-character ``token_urlsafe(16)`` that happens to
lack upper- or lower-case letters, once in about 45,000 draws, is estimated under 128 bits and refused).
"""

from __future__ import annotations

import math
import string
from typing import Final

MIN_TOKEN_BITS: Final = 128
# A random token of 22+ characters has far more distinct characters than this (32 random hex digits fall under
# 8 distinct ones about once in ten million); "aaaa…" or "abab…" do not.
MIN_DISTINCT_CHARACTERS: Final = 8
HEX: Final = frozenset(string.hexdigits)
BASE64_EXTRAS: Final = frozenset("-_+/=")


def alphabet_size(token: str) -> int:
    """The size of the smallest usual alphabet the token's characters come from: hex (one case), base64 or
    base64url when both cases appear, else the sum of the character classes present. A random 43-character
    base64url token shows both cases but once in billions; a phrase of lower-case words does not."""
    characters = set(token)
    lower, upper = characters & set(string.ascii_lowercase), characters & set(string.ascii_uppercase)
    if characters <= HEX and characters - set(string.digits) and not (lower and upper):
        return 16
    others = characters - set(string.ascii_letters + string.digits)
    if lower and upper and others <= BASE64_EXTRAS:
        return 64
    size = (26 if lower else 0) + (26 if upper else 0) + (10 if characters & set(string.digits) else 0)
    if others and others <= BASE64_EXTRAS:
        size += 4
    elif others:
        size += 32  # any printable punctuation
    return max(size, 2)


def estimated_bits(token: str) -> float:
    return len(token) * math.log2(alphabet_size(token)) if token else 0.0


def periodic(token: str) -> bool:
    """True when the token is a shorter string repeated (``abcabcabc``)."""
    return any(len(token) % p == 0 and token == token[:p] * (len(token) // p) for p in range(1, len(token) // 2 + 1))


def token_weakness(token: str) -> str | None:
    """Why ``token`` cannot carry 128 bits of randomness, or None when it may."""
    bits = estimated_bits(token)
    if bits < MIN_TOKEN_BITS:
        return (
            f"a token must carry at least {MIN_TOKEN_BITS} bits of randomness; this one carries at most {bits:.0f} "
            "(use 22 or more random base64url characters, or 32 hex digits)"
        )
    if len(set(token)) < MIN_DISTINCT_CHARACTERS or periodic(token):
        return "a token must be random; this one repeats a few characters"
    return None
