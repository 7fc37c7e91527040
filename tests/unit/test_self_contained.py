"""A plain clone is the whole project: no tracked file reaches for a path outside the repository.

The sample webhooks once lived in ../shared/whatsapp/payloads beside the checkout, so `make test` only passed on
a machine that happened to have that folder. They are in tests/data/whatsapp now; this test keeps it that way by
scanning every git-tracked text file for concrete ways of leaving the clone:

- the old out-of-repo folder (``shared/whatsapp``, ``../shared``) and the development machine's absolute path;
- ``Path(__file__).parents[N]`` or ``.parent`` chains that climb above the repository root from where the file is;
- ``REPO_ROOT.parent`` / ``ROOT.parent`` (the directory above the root) and ``$ROOT/..`` in shell;
- relative ``../`` paths (config files, kustomize, rule tests) that resolve above the root from the file's folder.

It cannot prove that no code computes such a path some other way; `.ci/run` proves it by running `make test` in a
fresh clone with nothing beside it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.samples import REPO_ROOT

pytestmark = pytest.mark.unit

# Written with character classes so that this file's own source does not match them.
FIXED_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"share[d][/\\]whatsapp"), "the out-of-repo payload folder (use tests/data/whatsapp)"),
    (re.compile(r"\.\.[/\\]share[d]\b"), "a sibling folder of the checkout"),
    (re.compile(r"(?<![\w.-])/wor[k]/"), "an absolute path of the development machine"),
    (re.compile(r"ROO[T]\.parent\b"), "the directory above the repository root"),
    (re.compile(r"\$\{?(?:REPO_)?ROO[T]\}?/\.\."), "the directory above the repository root"),
]
PARENTS_INDEX = re.compile(r"__file_[_]\)(?:\.resolve\(\))?\.parents\[(\d+)\]")
PARENT_CHAIN = re.compile(r"__file_[_]\)(?:\.resolve\(\))?((?:\.parent\b)+)")
# A relative path that starts with `..` segments: not part of a longer path (`$(dirname "$0")/..`, `a/..`) or of
# an ellipsis, and ending where the segment ends.
RELATIVE_UP = re.compile(r"(?<![\w./$)}\\-])(\.\.(?:/\.\.)*)(?=/|[\s\"'`,;:)\]]|$)", re.MULTILINE)

THIS_FILE = Path(__file__).resolve().relative_to(REPO_ROOT).as_posix()


def escapes(relative: str, text: str) -> Iterator[str]:
    """``line: reason`` for every reference in ``text`` (the file at ``relative``) that leaves the repository."""
    depth = len(Path(relative).parts) - 1  # folders between the root and the file
    for number, line in enumerate(text.splitlines(), start=1):
        for pattern, reason in FIXED_PATTERNS:
            if pattern.search(line):
                yield f"{number}: {reason}: {line.strip()}"
        for match in PARENTS_INDEX.finditer(line):
            if int(match.group(1)) > depth:
                yield f"{number}: parents[{match.group(1)}] climbs above the root from {relative}: {line.strip()}"
        for match in PARENT_CHAIN.finditer(line):
            if match.group(1).count(".parent") - 1 > depth:
                yield f"{number}: a .parent chain climbs above the root from {relative}: {line.strip()}"
        for match in RELATIVE_UP.finditer(line):
            if match.group(1).count("..") > depth:
                yield f"{number}: {match.group(1)!r} resolves above the root from {relative}: {line.strip()}"


def tracked_text_files() -> Iterator[tuple[str, str]]:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    for relative in sorted(filter(None, listed.split("\0"))):
        path = REPO_ROOT / relative
        if relative == THIS_FILE or not path.is_file():  # this file quotes what it forbids; deleted in the tree
            continue
        raw = path.read_bytes()
        if b"\0" in raw:
            continue
        try:
            yield relative, raw.decode()
        except UnicodeDecodeError:
            continue


def test_no_tracked_file_refers_outside_the_repository() -> None:
    files = list(tracked_text_files())
    assert any(relative.startswith("tests/data/whatsapp/") for relative, _ in files), "the sample webhooks moved?"
    found = {relative: list(escapes(relative, text)) for relative, text in files}
    assert {relative: lines for relative, lines in found.items() if lines} == {}


def test_the_sample_webhooks_are_in_the_repository() -> None:
    samples = sorted((REPO_ROOT / "tests" / "data" / "whatsapp").glob("*.json"))
    assert len(samples) >= 50
    assert (REPO_ROOT / "tests" / "data" / "whatsapp" / "SOURCES.md").is_file()


@pytest.mark.parametrize(
    ("relative", "line"),
    [
        # The helpers this test replaced, verbatim.
        (
            "tests/unit/test_events.py",
            'return Path(override) if override else Path(__file__).resolve().parents[3] / "shared" / "whatsapp"',
        ),
        ("tests/support.py", 'return Path(override) if override else REPO_ROOT.parent / "shared" / "whatsapp"'),
        ("tests/support.py", '"""The shared sample webhooks (../shared/whatsapp/payloads)."""'),
        ("tests/unit/test_x.py", "HERE = Path(__file__).parents[3]"),
        ("services/x.py", "HERE = Path(__file__).resolve().parent.parent.parent"),
        ("deploy/k8s/overlays/example/kustomization.yaml", "  - ../../../../../elsewhere"),
        ("deploy/compose.yaml", "    context: ../.."),
        ("deploy/local/stack.sh", 'PAYLOADS="$ROOT/../payloads"'),
        ("Makefile", "SEED := /work/shared"),
    ],
)
def test_the_scan_catches_escapes(relative: str, line: str) -> None:
    assert list(escapes(relative, line))


@pytest.mark.parametrize(
    ("relative", "line"),
    [
        ("tests/helpers/support.py", "REPO_ROOT = Path(__file__).resolve().parents[2]"),
        ("deploy/k8s/generate.py", "REPO_ROOT = Path(__file__).resolve().parents[2]"),
        ("devtools/samples.py", "REPO_ROOT = Path(__file__).resolve().parent.parent"),
        ("deploy/k8s/overlays/example/kustomization.yaml", "  - ../../base"),
        ("deploy/prometheus/tests/rules_test.yml", "  - ../rules.yml"),
        ("deploy/compose.yaml", "    context: .."),
        ("deploy/local/stack.sh", 'ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)'),
        ("docs/OPERATIONS.md", "Wait... and see the shared buffers at https://example.com/work/x"),
    ],
)
def test_the_scan_allows_paths_inside_the_repository(relative: str, line: str) -> None:
    assert list(escapes(relative, line)) == []
