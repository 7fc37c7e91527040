"""Helpers shared by tests and benchmarks: where things are, and the demo configuration."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ENV_FILE = REPO_ROOT / "deploy" / "local" / "demo.env"


def payloads_dir() -> Path:
    """The shared sample webhooks (../shared/whatsapp/payloads), overridable with WA_PAYLOADS_DIR."""
    override = os.environ.get("WA_PAYLOADS_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "whatsapp" / "payloads"


def load_demo_env(path: Path = DEMO_ENV_FILE) -> dict[str, str]:
    """Parse the KEY=VALUE lines of demo.env (comments and blank lines ignored; no shell expansion)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {stripped!r}")
        values[name] = value
    return values
