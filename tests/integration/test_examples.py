"""The examples run as documented."""

from __future__ import annotations

import json
import os
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


def test_the_reports_demo_fires_weekday_slots_and_filters_bank_holidays(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.reports", "demo", "--database", f"sqlite:///{tmp_path / 'r.db'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("  triggered  ") == 7 and out.stdout.count("  filtered  ") == 3
    assert "Fri 2026-12-25 07:00 GMT  filtered   examples.reports:not_a_bank_holiday said no" in out.stdout
    assert "7 reports sent" in out.stdout


def test_the_reports_schedule_is_defined_by_a_deploy_step_that_can_run_again(tmp_path: Path) -> None:
    env = {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)

    before = run(sys.executable, "-m", "examples.reports", "schedule")
    assert before.returncode == 1 and "workflow-celery db upgrade" in before.stderr, before.stderr
    assert run(sys.executable, "-m", "workflow_celery.cli", "-A", "examples.reports", "db", "upgrade").returncode == 0
    first = run(sys.executable, "-m", "examples.reports", "schedule")
    again = run(sys.executable, "-m", "examples.reports", "schedule")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout.startswith("schedule uk: 0 7 * * MON-FRI (Europe/London)")
    listed = run(sys.executable, "-m", "workflow_celery.cli", "-A", "examples.reports", "schedules", "list", "--json")
    [schedule] = json.loads(listed.stdout)["schedules"]
    assert schedule["filter"] == "examples.reports:not_a_bank_holiday" and schedule["time_zone"] == "Europe/London"


def test_a_filter_in_a_script_run_as_a_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    script = tmp_path / "nightly.py"
    script.write_text(
        "from datetime import datetime\n"
        "from workflow_celery.testing import in_process\n"
        "from tests.unit.workflows import chain\n"
        "def weekdays(foreign_id: str, slot: datetime) -> bool:\n"
        "    return slot.weekday() < 5\n"
        "wf, _ = in_process(chain())\n"
        "wf.schedule('nightly', '@daily', filter=weekdays)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1
    assert "weekdays belongs to a script run as `python file.py`; move it into a module" in out.stderr


def test_the_one_time_codes_demo_reminds_once_verifies_one_code_and_expires_the_other() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.one_time_codes", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("expires in 10 minutes") == 2  # each reminder once
    assert "verify with a wrong code: {'status': 'SENT'}" in out.stdout
    assert "verify with the code: {'status': 'VERIFIED'}" in out.stdout
    assert "+441234: VERIFIED after 3 versions" in out.stdout and "+449876: EXPIRED after 3 versions" in out.stdout
