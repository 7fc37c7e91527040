"""The legal grounds on which an erasure request may be refused: GDPR Art. 17(3) (a)-(e), and Art. 12(5) for a
manifestly unfounded or excessive request. A module of its own, without dependencies, so that the CLI's parser
offers them without importing the service (``wa-archive --help`` stays fast)."""

from __future__ import annotations

from typing import Final, Literal, get_args

RefusalGround = Literal[
    "freedom_of_expression",  # (a) freedom of expression and information
    "legal_obligation",  # (b) a legal obligation, a task in the public interest or official authority
    "public_health",  # (c) public interest in the area of public health
    "archiving_research_statistics",  # (d) archiving in the public interest, research, statistics
    "legal_claims",  # (e) the establishment, exercise or defence of legal claims
    "manifestly_unfounded_or_excessive",  # Art. 12(5)
]
REFUSAL_GROUNDS: Final[tuple[str, ...]] = get_args(RefusalGround)
