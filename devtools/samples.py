"""Where the repository keeps its sample data and its demo configuration: read by the tests, the benchmarks and
``make run``, never by the services (an installed wheel has neither file)."""

from __future__ import annotations

import os
from pathlib import Path

from services.core.settings import read_env_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ENV_FILE = REPO_ROOT / "deploy" / "local" / "demo.env"
# Meta's Cloud API webhook samples, one POST body per file (SOURCES.md says where each comes from).
PAYLOADS_DIR = REPO_ROOT / "tests" / "data" / "whatsapp"


def payloads_dir() -> Path:
    """The sample webhooks (tests/data/whatsapp in the repository), overridable with WA_PAYLOADS_DIR."""
    override = os.environ.get("WA_PAYLOADS_DIR")
    return Path(override) if override else PAYLOADS_DIR


def load_demo_env(path: Path = DEMO_ENV_FILE) -> dict[str, str]:
    """The demo configuration (deploy/local/demo.env), parsed the way the services' tools read it."""
    return read_env_file(path)
