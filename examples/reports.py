"""A sales report every weekday at 07:00 London time, except on bank holidays: a schedule.

    python -m examples.reports schedule          # define the schedule (again at each deploy: harmless)
    celery -A examples.reports worker -Q 'sales-reports.*' --loglevel=INFO
    workflow-celery -A examples.reports schedules list
    python -m examples.reports demo              # two weeks on a fake clock: SQLite, no server

Broker and database come from ``celeryconfig`` (``CELERY_BROKER_URL`` and
``WORKFLOW_CELERY_DATABASE_URL``). Any worker of the app fires the schedule's
slots, one run per slot however many workers there are.
"""

from __future__ import annotations

import argparse
import enum
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from celery import Celery

import celeryconfig
from workflow_celery import Builder, InProcessBroker, Run, SQLStore, Workflow
from workflow_celery.testing import FakeClock


class ReportStatus(enum.IntEnum):
    UNKNOWN = 0
    REQUESTED = 1
    GATHERED = 2
    SENT = 3


@dataclass
class Report:
    region: str = ""
    lines: list[str] = field(default_factory=list)
    sent_to: str = ""


BANK_HOLIDAYS = {date(2026, 12, 25), date(2026, 12, 28), date(2027, 1, 1)}
SPEC = "0 7 * * MON-FRI"
TIME_ZONE = "Europe/London"


def not_a_bank_holiday(foreign_id: str, slot: datetime) -> bool:
    """The schedule's filter: ``slot`` is the slot's time in the schedule's time zone."""
    return slot.date() not in BANK_HOLIDAYS


def gather(run: Run[Report, ReportStatus]) -> ReportStatus:
    run.object.lines = [f"{run.object.region}: 42 orders", f"report run {run.run_id}"]
    return ReportStatus.GATHERED


def send(run: Run[Report, ReportStatus]) -> ReportStatus:
    run.object.sent_to = "sales@example.com"
    return ReportStatus.SENT


def report_workflow() -> Builder[Report, ReportStatus]:
    b = Builder("sales-reports", Report, ReportStatus)
    b.add_step(ReportStatus.REQUESTED, gather, ReportStatus.GATHERED)
    b.add_step(ReportStatus.GATHERED, send, ReportStatus.SENT)
    return b


app = Celery("reports")
app.config_from_object("celeryconfig")
wf = report_workflow().build(app, SQLStore(celeryconfig.workflow_database_url))


def define_schedules(workflow: Workflow[Report, ReportStatus] = wf) -> None:
    """What a deploy step runs: defining the same schedule again changes nothing."""
    workflow.schedule("uk", SPEC, time_zone=TIME_ZONE, initial_value=Report(region="uk"), filter=not_a_bank_holiday)


def demo(database: str | None) -> int:
    url = database or f"sqlite:///{Path(tempfile.mkdtemp(prefix='reports-demo-')) / 'reports.db'}"
    store = SQLStore(url)
    store.create_schema()
    clock = FakeClock(datetime(2026, 12, 20, 12, 0, tzinfo=UTC))
    broker = InProcessBroker()
    local = report_workflow().build(broker, store, clock=clock)
    define_schedules(local)
    print(f"schedule {SPEC!r} in {TIME_ZONE}, bank holidays filtered; database {url}")
    for _ in range(14 * 24 * 4):  # two weeks, a look every 15 minutes
        clock.advance(timedelta(minutes=15))
        broker.run_until_idle()
    for slot in reversed(local.schedule_slots("uk", limit=100)):
        when = slot.slot_at.astimezone(ZoneInfo(TIME_ZONE))
        print(f"{when:%a %Y-%m-%d %H:%M %Z}  {slot.outcome:<9}  {slot.run_id or slot.detail}")
    sent = [r for r in local.list(limit=100) if r.status is ReportStatus.SENT]
    print(f"{len(sent)} reports sent")
    store.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("schedule", help="define the schedule in the app's database")
    demo_parser = sub.add_parser("demo", help="two weeks on a fake clock, in-process (SQLite)")
    demo_parser.add_argument("--database", help="SQLAlchemy URL (default: a new SQLite file)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.database)
    define_schedules()
    [schedule] = [s for s in wf.schedules() if s.foreign_id == "uk"]
    print(f"schedule uk: {schedule.spec} ({schedule.time_zone}), next slot {schedule.next_slot.isoformat()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
