"""A template message as the customer saw it (pure): the template's components, read from the Graph API, with the
send's parameters in place of their placeholders.

A send names a template (``template.name``, ``template.language.code``) and gives parameters per component
(``template.components[]``: ``{"type": "body", "parameters": [{"type": "text", "text": "…"}, …]}``). Placeholders
are positional (``{{1}}``, ``{{2}}``) or named (``{{first_name}}``, a parameter's ``parameter_name``). The text
archived is the header (when it is text), the body and the footer, one per line; a placeholder with no parameter
is left as written (the archive shows what it could not fill rather than guessing). Parameters that are not text
(currency, date_time) give their ``fallback_value``; media parameters are not text (the medium is archived
beside the message when it is sent by id or link).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

PLACEHOLDER: Final = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
TEXT_COMPONENTS: Final = ("HEADER", "BODY", "FOOTER")


def parameter_text(parameter: Any) -> str | None:
    """The text a parameter puts in place of its placeholder, or None (a medium, an unknown type)."""
    if not isinstance(parameter, dict):
        return None
    kind = parameter.get("type")
    if kind == "text" and isinstance(parameter.get("text"), str):
        return str(parameter["text"])
    if kind in ("currency", "date_time"):
        value = parameter.get(kind)
        if isinstance(value, dict) and isinstance(value.get("fallback_value"), str):
            return str(value["fallback_value"])
    return None


def _parameters(send_components: Any, component_type: str) -> tuple[list[str | None], dict[str, str]]:
    """The positional and named texts the send gives the component of ``component_type`` (lower case)."""
    positional: list[str | None] = []
    named: dict[str, str] = {}
    if not isinstance(send_components, list):
        return positional, named
    for component in send_components:
        if not isinstance(component, dict) or str(component.get("type", "")).lower() != component_type:
            continue
        for parameter in component.get("parameters") or ():
            text = parameter_text(parameter)
            name = parameter.get("parameter_name") if isinstance(parameter, dict) else None
            if isinstance(name, str) and text is not None:
                named[name] = text
            else:
                positional.append(text)
    return positional, named


def substitute(text: str, positional: Sequence[str | None], named: Mapping[str, str]) -> str:
    """``text`` with each ``{{n}}`` (1-based) and ``{{name}}`` replaced by its parameter, others left as written."""

    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.isdigit():
            index = int(key) - 1
            value = positional[index] if 0 <= index < len(positional) else None
        else:
            value = named.get(key)
        return match.group(0) if value is None else value

    return PLACEHOLDER.sub(one, text)


def rendered_text(template: Mapping[str, Any], send: Mapping[str, Any]) -> str | None:
    """The text the customer saw of ``send`` (the request's ``template`` object) built from ``template`` (Meta's
    template object with its ``components``); None when the template has no text component."""
    lines: list[str] = []
    for component in template.get("components") or ():
        if not isinstance(component, dict):
            continue
        kind = str(component.get("type", "")).upper()
        text = component.get("text")
        if kind not in TEXT_COMPONENTS or not isinstance(text, str):
            continue
        if kind == "HEADER" and component.get("format", "TEXT") != "TEXT":
            continue
        positional, named = _parameters(send.get("components"), kind.lower())
        lines.append(substitute(text, positional, named))
    return "\n".join(lines) if lines else None


def choose_template(found: Any, language: str | None) -> dict[str, Any] | None:
    """The template of ``found`` (the ``data`` of a ``message_templates`` answer) in ``language``, else the only one."""
    if not isinstance(found, list):
        return None
    candidates = [t for t in found if isinstance(t, dict)]
    for template in candidates:
        if language is not None and template.get("language") == language:
            return template
    return candidates[0] if len(candidates) == 1 else None
