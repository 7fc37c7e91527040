"""One hierarchy for the refusals of an action: what was asked cannot be done, and nothing was done.

Every refusal an operator can meet derives from :class:`ActionRefused`, which carries what each adapter needs to
translate it: the HTTP status (admin API, console) and the exit code (``wa-archive``). An adapter registers one
handler for the base, never a list of kinds (a list goes stale the day a refusal is added: the console's lacked two).
The message of a refusal is shown to the operator as is: it names no person, only what was wrong with the request.

Failures of the archive itself (a store unavailable, a tampered record, a key wrapped by a KEK not configured) are
not refusals: they are errors of the system and keep their own types.
"""

from __future__ import annotations

from typing import ClassVar


class ActionRefused(Exception):
    """The request cannot be done as asked; nothing was changed and nothing was read."""

    http_status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 2
    # The metric label and the log word of this kind of refusal (no personal data).
    kind: ClassVar[str] = "invalid"


class Forbidden(ActionRefused, PermissionError):
    """The operator's role does not allow the action; nothing was done."""

    http_status = 403
    kind = "role"


class NotFound(ActionRefused, LookupError):
    """The thing the action is about does not exist (e.g. no active hold with this id); nothing was done."""

    http_status = 404
    exit_code = 1
    kind = "not_found"


class InvalidRequest(ActionRefused, ValueError):
    """The request is incomplete or contradicts the state of what it is about (a hold without its number, an
    erasure request that can no longer change…); nothing was done."""


class ReasonRequired(InvalidRequest):
    """Decrypting a person's data needs a stated reason (DESIGN.md §1.5); nothing was read."""

    kind = "reason"


class PersonRequired(InvalidRequest):
    """A read names nobody, or names a person twice over (a contact id and a pseudonym); nothing was read."""
