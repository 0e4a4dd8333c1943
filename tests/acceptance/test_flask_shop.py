"""Acceptance: examples/flask_shop through Flask's test client, with a real worker, broker and PostgreSQL.

The client runs in a subprocess of its own, as the web app would, so that
``examples.orders`` reads this test's database and broker from the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import ROOT, Worker

CLIENT = r"""
import json, sys, time
from examples.flask_shop.app import ShopOrder, create_app, db, workflows
from examples.orders import Order, wf
from workflow_celery import RecordNotFound

app = create_app({"TESTING": True})


@app.post("/orders/fail-after-trigger")
def fail_after_trigger():
    with workflows.joined():
        db.session.add(ShopOrder(id="order-bad", customer="mallory"))
        wf.trigger("order-bad", initial_value=Order(id="order-bad", items=["book"], total=1.0))
        raise RuntimeError("the view failed after triggering")


client = app.test_client()
out = {}
try:
    client.post("/orders/fail-after-trigger")
    out["raised"] = False
except RuntimeError:
    out["raised"] = True
with app.app_context():
    out["bad_order_rows"] = db.session.query(ShopOrder).filter_by(id="order-bad").count()
try:
    wf.latest("order-bad")
    out["bad_run"] = True
except RecordNotFound:
    out["bad_run"] = False
out["bad_doorbells"] = len([m for m in wf.store.outbox() if m.body.get("run_id") and "order-bad" in str(m.body)])

created = client.post("/orders", json={"id": "order-1", "customer": "ada", "items": ["book"], "total": 12.5})
out["created"] = [created.status_code, created.get_json()]
again = client.post("/orders", json={"id": "order-1", "customer": "ada", "items": ["book"], "total": 12.5})
out["again"] = again.status_code
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    shown = client.get("/orders/order-1").get_json()
    if shown.get("status") == "FULFILLED":
        break
    time.sleep(0.2)
out["shown"] = shown
print(json.dumps(out))
"""


def env_for(pg_database: str, broker_url: str) -> dict[str, str]:
    return {**os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url}


def test_an_order_and_its_run_commit_together(
    pg_database: str, broker_url: str, start_worker: Callable[..., Worker]
) -> None:
    start_worker("examples.orders", "order-processing.*", concurrency=1)
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT],
        cwd=ROOT,
        env=env_for(pg_database, broker_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # The view that failed after triggering left nothing: no order, no run, no doorbell.
    assert out["raised"] is True
    assert (out["bad_order_rows"], out["bad_run"], out["bad_doorbells"]) == (0, False, 0)
    # The view that committed: the order and its run, completed by the worker.
    status, body = out["created"]
    assert status == 201 and body["id"] == "order-1" and body["run_id"]
    assert out["again"] == 409
    assert out["shown"]["status"] == "FULFILLED" and out["shown"]["run_id"] == body["run_id"]
    assert out["shown"]["charge_id"]


def test_flask_workflow_command(pg_database: str, broker_url: str, tmp_path: Path) -> None:
    flask = str(Path(sys.executable).with_name("flask"))
    env = env_for(pg_database, broker_url)
    app = ["--app", "examples.flask_shop.app:create_app"]
    listed = subprocess.run(
        [flask, *app, "workflow", "runs", "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert "(0 runs of order-processing)" in listed.stdout
    missing = subprocess.run(
        [flask, *app, "workflow", "runs", "show", "nope"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith("flask workflow: error: run 'nope' not found")
