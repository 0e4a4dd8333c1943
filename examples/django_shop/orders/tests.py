"""The shop's tests, run by Django's test runner: ``python manage.py test orders``.

They need the shop's PostgreSQL and broker (the settings' environment
variables). Django's runner creates the test database (``test_…``) and runs
the migrations there, the workflow tables included; the store follows it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client, TestCase, TransactionTestCase
from shop.celery import app
from sqlalchemy.engine import make_url

from workflow_celery import RecordNotFound, RunState, SQLStore
from workflow_celery.contrib.django.models import Run
from workflow_celery.testing import celery_worker

from .models import ShopOrder
from .workflows import OrderStatus, wf


def place(client: Client, order_id: str, *, quantity: int = 1, sku: str = "book") -> Any:
    body = {"id": order_id, "customer": "ada", "lines": [{"sku": sku, "quantity": quantity}], "total": 12.5}
    return client.post("/orders/", json.dumps(body), content_type="application/json")


def waiting_messages(queue: str) -> int:
    """How many messages wait on ``queue`` in the broker."""
    with app.connection_for_write() as conn:
        # Declared as Celery declares it: a passive declare fails on Redis while the queue is empty.
        return int(conn.default_channel.queue_declare(queue=queue, durable=True).message_count)


class PlaceOrderTests(TestCase):
    """In a ``TestCase`` every test is a transaction rolled back at its end, and so are the runs it triggers."""

    def test_the_runs_go_to_the_test_database(self) -> None:
        self.assertTrue(connection.settings_dict["NAME"].startswith("test_"))
        with self.captureOnCommitCallbacks() as published:
            response = place(self.client, "t-1")
        self.assertEqual(response.status_code, 201)
        run = wf.lookup(response.json()["run_id"])
        self.assertEqual((run.status, run.run_state), (OrderStatus.CREATED, RunState.INITIATED))
        self.assertEqual(len(published), 1)  # the run's first message: published when the transaction commits

    def test_an_order_that_fails_after_its_trigger_leaves_no_run_and_no_message(self) -> None:
        with self.captureOnCommitCallbacks() as published:
            response = place(self.client, "t-2", quantity=0)
        self.assertEqual(response.status_code, 400)
        self.assertFalse(ShopOrder.objects.filter(id="t-2").exists())
        with self.assertRaises(RecordNotFound):
            wf.latest("t-2")
        self.assertEqual(published, [])

    def test_an_order_placed_twice_is_refused(self) -> None:
        self.assertEqual(place(self.client, "t-3").status_code, 201)
        self.assertEqual(place(self.client, "t-3").status_code, 409)


class AdminTests(TestCase):
    def setUp(self) -> None:
        self.client.force_login(User.objects.create_superuser("admin", "admin@example.com", "not-a-secret"))
        self.run_id = place(self.client, "a-1", sku="<script>alert(1)</script>").json()["run_id"]

    def test_the_list_filters_by_workflow_status_run_state_and_foreign_id(self) -> None:
        url = "/admin/workflow_celery/run/"
        shown = self.client.get(
            url, {"workflow_name__exact": "shop-orders", "status": "CREATED", "run_state__exact": 1}
        )
        self.assertContains(shown, self.run_id)
        self.assertNotContains(self.client.get(url, {"status": "SHIPPED"}), self.run_id)
        self.assertNotContains(self.client.get(url, {"run_state__exact": int(RunState.PAUSED)}), self.run_id)
        self.assertContains(self.client.get(url, {"q": "a-1"}), self.run_id)
        self.assertNotContains(self.client.get(url, {"q": "a-2"}), self.run_id)

    def test_a_runs_page_shows_its_object_escaped_and_its_history(self) -> None:
        page = self.client.get(f"/admin/workflow_celery/run/{self.run_id}/change/")
        self.assertContains(page, "&lt;script&gt;alert(1)&lt;/script&gt;")
        self.assertNotContains(page, "<script>alert(1)")
        self.assertContains(page, "<td>INITIATED</td>", html=False)

    def test_pause_resume_and_cancel_actions(self) -> None:
        url = "/admin/workflow_celery/run/"
        for action, state in (("pause_runs", RunState.PAUSED), ("resume_runs", RunState.RUNNING)):
            response = self.client.post(url, {"action": action, "_selected_action": [self.run_id]}, follow=True)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(wf.lookup(self.run_id).run_state, state)
        self.client.post(url, {"action": "cancel_runs", "_selected_action": [self.run_id]})
        run = wf.lookup(self.run_id)
        self.assertEqual(run.run_state, RunState.CANCELLED)
        self.assertEqual(run.meta.run_state_reason, "cancelled in the admin by admin")

    def test_an_action_the_run_state_forbids_is_reported(self) -> None:
        url = "/admin/workflow_celery/run/"
        # A run no worker has started yet cannot be cancelled (the original's table of run states): pause it first.
        response = self.client.post(url, {"action": "cancel_runs", "_selected_action": [self.run_id]}, follow=True)
        self.assertContains(response, f"Run {self.run_id}: invalid run state transition: from INITIATED to CANCELLED")
        self.assertEqual(wf.lookup(self.run_id).run_state, RunState.INITIATED)

    def test_staff_without_the_permission_see_no_actions(self) -> None:
        viewer = User.objects.create_user("viewer", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
        self.client.force_login(viewer)
        self.assertEqual(self.client.get("/admin/workflow_celery/run/").status_code, 200)
        self.client.post("/admin/workflow_celery/run/", {"action": "pause_runs", "_selected_action": [self.run_id]})
        self.assertEqual(wf.lookup(self.run_id).run_state, RunState.INITIATED)


class RunsUITests(TestCase):
    """The web UI mounted at /workflows/ (``workflow_celery.contrib.django.ui``)."""

    def setUp(self) -> None:
        self.admin = User.objects.create_superuser("admin", "admin@example.com", "not-a-secret")
        self.run_id = place(self.client, "u-1", sku="<script>alert(1)</script>").json()["run_id"]

    def test_anonymous_users_are_sent_to_the_admin_login(self) -> None:
        response = self.client.get("/workflows/runs")
        self.assertEqual(response.status_code, 302)
        self.assertIn("/admin/login/", response["Location"])

    def test_the_list_the_run_page_and_the_graph(self) -> None:
        self.client.force_login(self.admin)
        self.assertContains(self.client.get("/workflows/runs", {"foreign_id": "u-1"}), self.run_id)
        self.assertNotContains(self.client.get("/workflows/runs", {"foreign_id": "u-2"}), self.run_id)
        page = self.client.get(f"/workflows/runs/{self.run_id}")
        self.assertContains(page, "&lt;script&gt;alert(1)&lt;/script&gt;")
        self.assertNotContains(page, "<script>alert(1)")
        self.assertContains(self.client.get("/workflows/graph/shop-orders"), "INITIATED 1")

    def test_pausing_needs_the_csrf_token_and_resuming_in_bulk_counts_first(self) -> None:
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.admin)
        confirm = client.get(f"/workflows/runs/{self.run_id}/pause")
        self.assertEqual(client.post(f"/workflows/runs/{self.run_id}/pause", {"reason": "x"}).status_code, 403)
        self.assertEqual(wf.lookup(self.run_id).run_state, RunState.INITIATED)
        token = confirm.context["csrf_token"] if confirm.context else client.cookies["csrftoken"].value
        done = client.post(f"/workflows/runs/{self.run_id}/pause", {"csrfmiddlewaretoken": token, "reason": "check"})
        self.assertEqual(done.status_code, 303)
        self.assertEqual(wf.lookup(self.run_id).run_state, RunState.PAUSED)
        self.assertContains(client.get("/workflows/bulk", {"workflow": "shop-orders"}), "1 paused run matches.")
        bulk = {"csrfmiddlewaretoken": token, "workflow": "shop-orders", "confirm": "resume", "expected": "1"}
        client.post("/workflows/bulk", bulk)
        self.assertEqual(wf.lookup(self.run_id).run_state, RunState.RUNNING)

    def test_staff_without_the_permission_may_look_but_not_change(self) -> None:
        viewer = User.objects.create_user("viewer", is_staff=True)
        viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
        self.client.force_login(viewer)
        self.assertNotContains(self.client.get(f"/workflows/runs/{self.run_id}"), "/pause")
        self.assertEqual(self.client.post(f"/workflows/runs/{self.run_id}/pause").status_code, 403)
        self.assertEqual(wf.lookup(self.run_id).run_state, RunState.INITIATED)

    def test_staff_without_the_view_permission_see_no_run(self) -> None:
        self.client.force_login(User.objects.create_user("nobody", is_staff=True))
        for url in ("/workflows/runs", f"/workflows/runs/{self.run_id}", "/workflows/bulk"):
            response = self.client.get(url)
            self.assertEqual(response.status_code, 403, url)
            self.assertNotContains(response, self.run_id, status_code=403)
            self.assertNotContains(response, "shop-orders", status_code=403)  # not even the workflows' names

    def test_a_database_that_does_not_answer_is_a_503_page(self) -> None:
        self.client.force_login(self.admin)
        assert isinstance(wf.store, SQLStore)
        url = wf.store.engine.url.set(database="wfc_no_such_database")
        unreachable = SQLStore(url.render_as_string(hide_password=False))
        store, wf.store = wf.store, unreachable
        try:
            response = self.client.get("/workflows/runs")
        finally:
            wf.store = store
            unreachable.dispose()
        self.assertContains(response, "the database did not answer", status_code=503)
        self.assertNotContains(response, "wfc_no_such_database", status_code=503)

    def test_pages_are_sent_with_a_content_security_policy(self) -> None:
        self.client.force_login(self.admin)
        response = self.client.get("/workflows/runs")
        self.assertIn("frame-ancestors 'none'", response["Content-Security-Policy"])
        self.assertEqual(response["X-Content-Type-Options"], "nosniff")


class CheckoutWithAWorkerTests(TransactionTestCase):
    """A real ``celery worker`` on the test database: what a committed view starts runs to the end."""

    def setUp(self) -> None:
        self.queue = "shop-orders.created"
        with app.connection_for_write() as conn:
            conn.default_channel.queue_declare(queue=self.queue, durable=True)
            conn.default_channel.queue_purge(self.queue)

    def start_worker(self) -> None:
        """A real worker on the test database (``celery -A shop worker``), stopped when the test ends."""
        url = make_url(os.environ.get("WORKFLOW_CELERY_DATABASE_URL", "postgresql+psycopg://127.0.0.1:5432/postgres"))
        test_database = url.set(database=connection.settings_dict["NAME"]).render_as_string(hide_password=False)
        self.enterContext(celery_worker("shop", "shop-orders.*", env={"WORKFLOW_CELERY_DATABASE_URL": test_database}))

    def test_a_committed_order_ships_and_a_failed_one_publishes_nothing(self) -> None:
        self.assertEqual(place(Client(), "w-1", quantity=0).status_code, 400)
        self.assertFalse(Run.objects.filter(foreign_id="w-1").exists())
        self.assertEqual(waiting_messages(self.queue), 0)

        placed = place(Client(), "w-2")
        self.assertEqual(placed.status_code, 201)
        self.assertEqual(waiting_messages(self.queue), 1)  # published once the view's transaction committed

        self.start_worker()
        run = wf.await_status("w-2", placed.json()["run_id"], OrderStatus.SHIPPED, timeout=90)
        self.assertEqual(run.object.tracking_number, "TRK-w-2")
        self.assertTrue(run.object.charge_id)
        self.assertEqual(Client().get("/orders/w-2/").json()["run_state"], "COMPLETED")
