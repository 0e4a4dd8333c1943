"""Every ```python block in docs/*.md runs.

The blocks of one page run in order, in one fresh namespace, in a subprocess
started in the repository root (so ``examples`` and ``celeryconfig`` import)
with ``TMPDIR`` pointing at a temporary directory: SQLite files made with
``tempfile`` land there and are removed with it. A block whose first line is
``# not run`` is shown to readers but not executed (it needs a running worker
or a framework that is not installed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = "# not run"
TIMEOUT_S = 180

# Runs the blocks inside the subprocess; __main__'s namespace is shared by all of them so that
# classes defined in a block (dataclasses, enums) resolve their module like in a script.
RUNNER = r"""
import json, sys, traceback
page, blocks = json.load(sys.stdin)
namespace = sys.modules["__main__"].__dict__
for number, code in blocks:
    try:
        exec(compile(code, f"<{page} block {number}>", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"DOCS FAILURE: {page} block {number}", file=sys.stderr)
        sys.exit(1)
"""


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The page's ```python blocks, numbered from 1 in page order, without the ``# not run`` ones."""
    found = FENCE.findall(page.read_text(encoding="utf-8"))
    return [(n, code) for n, code in enumerate(found, 1) if not code.lstrip().startswith(NOT_RUN)]


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_the_documentation_exists() -> None:
    names = {p.name for p in pages()}
    for name in [
        "concepts.md",
        "steps.md",
        "runs.md",
        "workers.md",
        "failure-model.md",
        "hooks.md",
        "stores.md",
        "cli.md",
        "testing.md",
        "callbacks-and-timeouts.md",
    ]:
        assert name in names, f"docs/{name} is missing"


def test_fences_are_closed() -> None:
    for page in pages():
        fences = [line for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("```")]
        assert len(fences) % 2 == 0, f"{page.name}: an odd number of ``` lines (an unclosed code block)"


@pytest.mark.parametrize("page", [p for p in pages() if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    blocks = python_blocks(page)
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    # The blocks must not depend on services picked by the environment the tests run in.
    for name in (
        "WORKFLOW_CELERY_APP",
        "WORKFLOW_CELERY_METRICS_PORT",
        "PROMETHEUS_MULTIPROC_DIR",
        "CELERY_BROKER_URL",
    ):
        env.pop(name, None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER],
            input=json.dumps([page.name, blocks]),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # The output captured before a timeout is bytes even with text=True.
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"{page.name}: the python blocks did not finish within {TIMEOUT_S}s\n{stderr}")
    if proc.returncode != 0:
        failed = re.search(r"DOCS FAILURE: (.+ block \d+)", proc.stderr)
        where = failed.group(1) if failed else page.name
        pytest.fail(f"{where} failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}", pytrace=False)
