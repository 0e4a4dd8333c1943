"""Acceptance: the web UI in headless Chromium (Playwright, Debian's chromium) over PostgreSQL and a real worker.

``workflow-celery -A examples.orders ui`` serves it as an operator starts it.
With ``WFC_UI_SCREENSHOTS=docs/images`` the pages are also saved as the
screenshots of ``docs/ui.md``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Page, sync_playwright

from examples.order_processing import Order, OrderStatus
from tests.acceptance.conftest import ROOT, Worker
from tests.acceptance.helpers import free_port, wait_all_finished, wait_until
from workflow_celery import RunState, SQLStore, Workflow

TOKEN = "a-token-for-the-browser-test"
EVIL = "<script>alert('pwned')</script>"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def answering(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def ui_url(pg_database: str, broker_url: str, store: SQLStore, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ, "WORKFLOW_CELERY_DATABASE_URL": pg_database, "CELERY_BROKER_URL": broker_url,
        "WORKFLOW_CELERY_UI_TOKEN": TOKEN,
    }  # fmt: skip
    log = (tmp_path / "ui.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("workflow-celery")), "-A", "examples.orders", "ui",
         "--port", str(port), "--no-mermaid-js"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: answering(port), 60, "the UI to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def shot(page: Page, name: str) -> None:
    folder = os.environ.get("WFC_UI_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(ROOT / folder / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("broker", ["redis"])
def test_an_operator_logs_in_filters_opens_a_run_pauses_and_resumes_it_and_sees_the_graph_change(
    ui_url: str,
    orders: Workflow[Order, OrderStatus],
    store: SQLStore,
    start_worker: Callable[..., Worker],
) -> None:
    evil = orders.trigger("order-evil", initial_value=Order(id="order-evil", items=[EVIL], total=9.5))
    others = [
        orders.trigger(f"order-{i}", initial_value=Order(id=f"order-{i}", items=["book"], total=5)) for i in range(3)
    ]
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()

        def dialog(d: Dialog) -> None:
            dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

        # Nothing without the token: the pages send to the login form, and a raw request is refused.
        page.goto(f"{ui_url}/runs")
        assert page.url == f"{ui_url}/login"
        assert context.request.get(f"{ui_url}/runs", max_redirects=0).status == 302
        assert context.request.get(f"{ui_url}/graph/order-processing", max_redirects=0).status == 302
        page.fill("input[name=token]", "not the token")
        page.click("button[type=submit]")
        assert "That is not the token." in page.content()
        page.fill("input[name=token]", TOKEN)
        shot(page, "ui-login")
        page.click("button[type=submit]")
        page.wait_for_url(f"{ui_url}/runs")
        assert page.inner_text("#total") == "4 runs"
        shot(page, "ui-runs")

        # Filter by foreign id, open the run: its object is shown as text.
        page.fill("input[name=foreign_id]", "order-evil")
        page.click("form.filters button[type=submit]")
        assert page.inner_text("#total") == "1 run"
        page.click(f"a[href$='/runs/{evil}']")
        page.wait_for_url(f"{ui_url}/runs/{evil}")
        assert EVIL in page.inner_text("#object") and page.locator("#object script").count() == 0
        assert page.inner_text("#run-state") == "INITIATED"

        # Pause it (with a reason, after the confirmation), then resume it.
        page.click(f"a[href$='/runs/{evil}/pause']")
        page.fill("input[name=reason]", "checking the basket")
        page.click("#confirm")
        page.wait_for_url(f"{ui_url}/runs/{evil}?done=pause")
        assert page.inner_text("#run-state") == "PAUSED" and store.lookup(evil).run_state == RunState.PAUSED
        assert store.lookup(evil).meta.run_state_reason == "checking the basket"
        shot(page, "ui-run")
        page.click(f"a[href$='/runs/{evil}/resume']")
        page.click("#confirm")
        page.wait_for_url(f"{ui_url}/runs/{evil}?done=resume")
        assert page.inner_text("#run-state") == "RUNNING"

        # A state-changing request without the form's token is refused.
        forged = context.request.post(f"{ui_url}/runs/{evil}/pause", form={"reason": "forged"}, max_redirects=0)
        assert forged.status == 400 and store.lookup(evil).run_state == RunState.RUNNING

        # The graph's counts before and after a worker ran the steps.
        page.goto(f"{ui_url}/graph/order-processing")
        assert "CREATED\t4" in page.inner_text("#counts")
        start_worker("examples.orders", "order-processing.*", concurrency=1)
        wait_all_finished(orders, [evil, *others], timeout=120)
        page.reload()
        counts = page.inner_text("#counts")
        assert "FULFILLED\t4" in counts and "COMPLETED 4" in counts and "CREATED\t0" in counts
        assert "stateDiagram-v2" in page.inner_text("#diagram")
        shot(page, "ui-graph")
        browser.close()
    assert dialogs == []  # no script of a run ever ran
