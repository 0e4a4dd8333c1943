"""One-time codes: a callback from a web view, a reminder and an expiry timeout on one status.

    flask --app examples.one_time_codes:web run                   # the webhook the SMS provider calls
    celery -A examples.one_time_codes worker -Q 'one-time-codes.*' --loglevel=INFO
    python -m examples.one_time_codes demo                        # a day on a fake clock, no server

``POST /codes/<phone>`` starts a run; ``POST /codes/<phone>/verify`` with the
code as the body is the callback. A run waits at ``SENT``: a reminder after
5 minutes (it leaves the run waiting), expiry after 15. Broker and database
come from ``celeryconfig`` (``CELERY_BROKER_URL``, ``WORKFLOW_CELERY_DATABASE_URL``).
"""

from __future__ import annotations

import enum
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from flask import Flask, jsonify, request

import celeryconfig
from workflow_celery import Builder, InProcessBroker, Run, SQLStore, Workflow, WorkflowInProgress, duration_timer
from workflow_celery.testing import FakeClock


class Code(enum.IntEnum):
    UNKNOWN = 0
    REQUESTED = 1
    SENT = 2
    VERIFIED = 3
    EXPIRED = 4


@dataclass
class Challenge:
    phone: str = ""
    code: str = ""
    reminded_at: str = ""


def send_code(run: Run[Challenge, Code]) -> Code:
    run.object.code = str(int(run.run_id.replace("-", "")[:8], 16) % 1_000_000).zfill(6)
    print(f"SMS to {run.object.phone}: your code is {run.object.code}")
    return Code.SENT


def verify(run: Run[Challenge, Code], payload: bytes) -> Code:
    return Code.VERIFIED if payload.decode().strip() == run.object.code else run.skip()


def remind(run: Run[Challenge, Code], now: datetime) -> Code:
    print(f"SMS to {run.object.phone}: your code {run.object.code} expires in 10 minutes")
    return run.skip()  # the run keeps waiting; this timeout is done


def expire(run: Run[Challenge, Code], now: datetime) -> Code:
    return Code.EXPIRED


def code_workflow() -> Builder[Challenge, Code]:
    b = Builder("one-time-codes", Challenge, Code)
    b.add_step(Code.REQUESTED, send_code, Code.SENT)
    b.add_callback(Code.SENT, verify, Code.VERIFIED)
    b.add_timeout(Code.SENT, duration_timer(timedelta(minutes=5)), remind, Code.EXPIRED)
    b.add_timeout(Code.SENT, duration_timer(timedelta(minutes=15)), expire, Code.EXPIRED)
    return b


def create_app(wf: Workflow[Challenge, Code]) -> Flask:
    web = Flask(__name__)

    @web.post("/codes/<phone>")
    def request_code(phone: str) -> Any:
        try:
            run_id = wf.trigger(phone, initial_value=Challenge(phone=phone))
        except WorkflowInProgress:
            return jsonify(error="a code was sent already; verify it or wait for it to expire"), 409
        return jsonify(run_id=run_id), 201

    @web.post("/codes/<phone>/verify")
    def verify_code(phone: str) -> Any:
        wf.callback(phone, Code.SENT, request.get_data())  # ignored unless the run is waiting at SENT
        run = wf.latest(phone)
        return jsonify(status=run.status.name), 200 if run.status == Code.VERIFIED else 422

    return web


app = Celery("one_time_codes")
app.config_from_object("celeryconfig")
wf = code_workflow().build(app, SQLStore(celeryconfig.workflow_database_url))
web = create_app(wf)


def demo() -> int:
    """Two phones on a fake clock: one verifies after a reminder, one lets its code expire."""
    store = SQLStore(f"sqlite:///{Path(tempfile.mkdtemp(prefix='codes-demo-')) / 'codes.db'}")
    store.create_schema()
    clock = FakeClock()
    broker = InProcessBroker()
    local = code_workflow().build(broker, store, clock=clock)
    client = create_app(local).test_client()
    for phone in ("+441234", "+449876"):
        client.post(f"/codes/{phone}")
    broker.run_until_idle()
    clock.advance(timedelta(minutes=6))
    broker.run_until_idle()
    code = local.latest("+441234").object.code
    print("verify with a wrong code:", client.post("/codes/+441234/verify", data=b"000000").get_json())
    print("verify with the code:", client.post("/codes/+441234/verify", data=code.encode()).get_json())
    clock.advance(timedelta(minutes=10))
    broker.run_until_idle()
    for phone in ("+441234", "+449876"):
        run = local.latest(phone)
        print(f"{phone}: {run.status.name} after {len(local.history(run.run_id))} versions")
    store.dispose()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["demo"]:
        sys.exit("usage: python -m examples.one_time_codes demo")
    sys.exit(demo())
