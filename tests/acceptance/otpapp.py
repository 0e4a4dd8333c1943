"""One-time codes: a callback from a web view, a one-hour timeout, on a clock every process shares.

celery -A tests.acceptance.otpapp worker -Q 'otp.*'

``SharedClock`` is real time plus an offset kept in the file ``$WFC_CLOCK_FILE``,
so a test moves the clock of the workers and its own at once.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from flask import Flask, jsonify, request

import celeryconfig
from workflow_celery import Builder, Run, SQLStore, Workflow, duration_timer

CODE = "4242"
PAUSE_AFTER_ERR_COUNT = 3


class SharedClock:
    """Real time plus the offset (seconds) written in ``path``: one fake clock for several processes."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def offset(self) -> float:
        if self.path is None or not self.path.exists():
            return 0.0
        return float(self.path.read_text() or 0)

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset())

    def advance(self, delta: timedelta) -> None:
        assert self.path is not None
        self.path.write_text(str(self.offset() + delta.total_seconds()))


class Otp(enum.IntEnum):
    UNKNOWN = 0
    SENT = 1
    WAITING = 2
    VERIFIED = 3
    EXPIRED = 4
    LOCKED = 5


@dataclass
class Code:
    marker_dir: str = ""
    fail_expiry: bool = False
    code: str = ""


def send(run: Run[Code, Otp]) -> Otp:
    run.object.code = CODE
    return Otp.WAITING


def verify(run: Run[Code, Otp], payload: bytes) -> Otp:
    if payload == b"lock":
        return Otp.LOCKED
    return Otp.VERIFIED if payload.decode() == run.object.code else run.skip()


def unlock(run: Run[Code, Otp], payload: bytes) -> Otp:
    return Otp.WAITING


def expire(run: Run[Code, Otp], now: datetime) -> Otp:
    """Leaves a marker file per execution, so a test counts how often it ran."""
    marker = Path(run.object.marker_dir)
    count = len(list(marker.glob(f"{run.run_id}.*")))
    (marker / f"{run.run_id}.{count + 1}.{os.getpid()}").touch()
    if run.object.fail_expiry:
        raise RuntimeError("the SMS gateway is down")
    return Otp.EXPIRED


def builder() -> Builder[Code, Otp]:
    b = Builder("otp", Code, Otp)
    b.add_step(Otp.SENT, send, Otp.WAITING)
    b.add_callback(Otp.WAITING, verify, Otp.VERIFIED, Otp.LOCKED)
    b.add_callback(Otp.LOCKED, unlock, Otp.WAITING)
    b.add_timeout(Otp.WAITING, duration_timer(timedelta(hours=1)), expire, Otp.EXPIRED)
    return b


def build(app: Any, store: SQLStore, clock: SharedClock) -> Workflow[Code, Otp]:
    return builder().build(app, store, clock=clock, pause_after_err_count=PAUSE_AFTER_ERR_COUNT)


def create_app(wf: Workflow[Code, Otp]) -> Flask:
    """The webhook the SMS provider calls."""
    web = Flask(__name__)

    @web.post("/otp/<foreign_id>/verify")
    def verify_code(foreign_id: str) -> Any:
        wf.callback(foreign_id, Otp.WAITING, request.get_data())
        run = wf.latest(foreign_id)
        return jsonify(status=run.status.name, version=run.meta.version), 202

    @web.post("/otp/<foreign_id>/unlock")
    def unlock_code(foreign_id: str) -> Any:
        wf.callback(foreign_id, Otp.LOCKED, request.get_data())
        run = wf.latest(foreign_id)
        return jsonify(status=run.status.name, version=run.meta.version), 202

    return web


app = Celery("otpapp")
app.config_from_object("celeryconfig")
wf = build(app, SQLStore(celeryconfig.workflow_database_url), SharedClock(os.environ.get("WFC_CLOCK_FILE")))
