"""The examples run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import ROOT


def test_demo_runs_the_order_workflow_end_to_end_without_a_server(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.demo", "--orders", "10", "--database", f"sqlite:///{tmp_path / 'd.db'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "10 of 10 runs completed" in out.stdout
    assert out.stdout.count("FULFILLED  COMPLETED  charge=ch_") == 8
    assert out.stdout.count("REJECTED   COMPLETED  charge=None") == 2
    assert out.stdout.count("confirmation") == 8
    for i in (1, 10):
        assert f"order-{i}  v1  CREATED    INITIATED" in out.stdout
