"""The web UI through Flask's test client: login, pages, filters, actions, CSRF, escaping, bulk resume, graphs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.unit.workflows import Status, Thing, chain, start
from workflow_celery import Builder, ConfigurationError, InProcessBroker, MemoryStore, RunState, SQLStore, Workflow
from workflow_celery.testing import FakeClock
from workflow_celery.ui.flask import blueprint, create_app
from workflow_celery.ui.pages import DEFAULT_MERMAID_INTEGRITY, DEFAULT_MERMAID_JS

TOKEN = "a-long-enough-test-token"
EVIL = "<script>alert('x')</script>"


@pytest.fixture
def wf() -> Workflow[Thing, Status]:
    return chain().build(InProcessBroker(), MemoryStore(), clock=FakeClock())


@pytest.fixture
def client(wf: Workflow[Thing, Status]) -> Iterator[FlaskClient]:
    app = create_app([wf], TOKEN, mermaid_js="")
    with app.test_client() as c:
        yield c


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page) or re.search(r"name=csrf_token value='([^']+)'", page)
    assert found, page
    return found.group(1)


def login(client: FlaskClient) -> None:
    form = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"csrf_token": csrf(form), "token": TOKEN})
    assert response.status_code == 303 and response.headers["Location"].endswith("/runs")


def test_nothing_is_shown_without_the_token(client: FlaskClient, wf: Workflow[Thing, Status]) -> None:
    run_id = wf.trigger("a")
    for url in ("/runs", f"/runs/{run_id}", "/graph/chain", "/bulk", f"/runs/{run_id}/pause"):
        response = client.get(url)
        assert response.status_code == 302 and response.headers["Location"].endswith("/login"), url
    assert client.post(f"/runs/{run_id}/pause", data={}).status_code == 302
    form = client.get("/login").get_data(as_text=True)
    wrong = client.post("/login", data={"csrf_token": csrf(form), "token": "guess"})
    assert wrong.status_code == 401 and "That is not the token." in wrong.get_data(as_text=True)
    assert client.get("/runs").status_code == 302
    assert client.get("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert wf.lookup(run_id).run_state == RunState.INITIATED


def test_a_login_form_without_its_csrf_token_is_refused(client: FlaskClient) -> None:
    assert client.post("/login", data={"token": TOKEN}).status_code == 400


def test_the_runs_list_filters_and_pages(client: FlaskClient, wf: Workflow[Thing, Status]) -> None:
    login(client)
    broker = wf.dispatcher
    assert isinstance(broker, InProcessBroker)
    for i in range(60):
        wf.trigger(f"order-{i:02d}")
        if i == 29:
            broker.drain()  # the first 30 complete, the others wait at START
    page = client.get("/runs").get_data(as_text=True)
    assert "60 runs, page 1 of 2" in page and page.count("<tr>") == 51  # the header and 50 runs
    older = client.get("/runs?page=2").get_data(as_text=True)
    assert older.count("<tr>") == 11
    only = client.get("/runs?foreign_id=order-07").get_data(as_text=True)
    assert "1 run<" in only and "order-07" in only and "order-08" not in only
    done = int(re.search(r"(\d+) runs?", client.get("/runs?run_state=completed").get_data(as_text=True)).group(1))  # type: ignore[union-attr]
    waiting = int(re.search(r"(\d+) runs?", client.get("/runs?status=START").get_data(as_text=True)).group(1))  # type: ignore[union-attr]
    assert (done, waiting) == (30, 30)
    assert "0 runs" in client.get("/runs?from=2030-01-01T00:00").get_data(as_text=True)
    assert "60 runs" in client.get("/runs?from=2024-12-31T00:00&to=2025-01-02T00:00").get_data(as_text=True)
    bad = client.get("/runs?status=NOWHERE")
    assert bad.status_code == 400 and "unknown status" in bad.get_data(as_text=True)
    assert client.get("/runs?from=yesterday").status_code == 400
    live = client.get("/runs?live=1").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="5">' in live


def test_a_run_page_shows_everything_and_escapes_what_the_run_holds(
    client: FlaskClient, wf: Workflow[Thing, Status]
) -> None:
    login(client)
    run_id = wf.trigger(EVIL, initial_value=Thing(name=EVIL))
    page = client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert EVIL not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "chain.start" in page and f"{_first_doorbell(wf, run_id)}-attempt-1" in page  # pending, with its task id
    listed = client.get("/runs").get_data(as_text=True)
    assert EVIL not in listed
    assert client.get("/runs/no-such-run").status_code == 404


def _first_doorbell(wf: Workflow[Thing, Status], run_id: str) -> str:
    [bell] = wf.store.outbox(run_id)
    return bell.id


def test_pause_and_resume_need_the_confirmation_form_and_its_csrf_token(
    client: FlaskClient, wf: Workflow[Thing, Status]
) -> None:
    login(client)
    run_id = wf.trigger("a")
    assert isinstance(wf.dispatcher, InProcessBroker)
    confirm = client.get(f"/runs/{run_id}/pause").get_data(as_text=True)
    assert "Pause run" in confirm
    assert client.post(f"/runs/{run_id}/pause", data={"reason": "x"}).status_code == 400  # no token
    assert client.post(f"/runs/{run_id}/pause", data={"csrf_token": "forged"}).status_code == 400
    assert wf.lookup(run_id).run_state == RunState.INITIATED
    done = client.post(f"/runs/{run_id}/pause", data={"csrf_token": csrf(confirm), "reason": "looking into it"})
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/runs/{run_id}?done=pause")
    paused = wf.lookup(run_id)
    assert paused.run_state == RunState.PAUSED and paused.meta.run_state_reason == "looking into it"
    refused = client.post(f"/runs/{run_id}/pause", data={"csrf_token": csrf(confirm)})
    assert refused.status_code == 409 and "invalid run state transition" in refused.get_data(as_text=True)
    offered = client.get(f"/runs/{run_id}?done=pause").get_data(as_text=True)
    assert "Done: paused." in offered
    assert f"/runs/{run_id}/resume" in offered and f"/runs/{run_id}/pause" not in offered  # what the state allows
    assert "Done:" not in client.get(f"/runs/{run_id}?done=anything+at+all").get_data(as_text=True)
    client.post(f"/runs/{run_id}/resume", data={"csrf_token": csrf(confirm)})
    assert wf.lookup(run_id).run_state == RunState.RUNNING
    assert client.get(f"/runs/{run_id}/explode").status_code == 404


def test_bulk_resume_counts_first_then_resumes(client: FlaskClient, wf: Workflow[Thing, Status]) -> None:
    login(client)
    ids = [wf.trigger(f"b-{i}") for i in range(7)]
    for run_id in ids[:5]:
        wf.pause(run_id, "incident")
    page = client.get("/bulk?workflow=chain").get_data(as_text=True)
    assert "5 paused runs match." in page
    # The status filter offers the workflow's statuses, as the runs page does; the one asked for is selected.
    assert '<select name="status"><option value="">any</option><option>START</option>' in page, page
    assert "<option selected>START</option>" in client.get("/bulk?workflow=chain&status=start").get_data(as_text=True)
    assert all(wf.lookup(r).run_state == RunState.PAUSED for r in ids[:5])  # counting changes nothing
    assert client.post("/bulk", data={"workflow": "chain", "confirm": "resume"}).status_code == 400
    form = {"csrf_token": csrf(page), "workflow": "chain", "confirm": "resume"}
    for bad in ("", "abc", "-5", "1e3", "٣"):
        refused = client.post("/bulk", data={**form, "expected": bad})
        assert refused.status_code == 400 and "reload the page" in refused.get_data(as_text=True), bad
    assert 'name="expected" value="5"' in page
    result = client.post("/bulk", data={**form, "expected": "5"}, follow_redirects=True)
    shown = result.get_data(as_text=True)
    assert "Resumed 5 of 5 runs" in shown and "0 paused runs match." in shown and "resume-all" not in shown
    assert result.request.method == "GET"  # reloading the result page resumes nothing again
    assert all(wf.lookup(r).run_state == RunState.RUNNING for r in ids[:5])


def test_the_graph_shows_the_runs_at_each_status(client: FlaskClient, wf: Workflow[Thing, Status]) -> None:
    login(client)
    for i in range(3):
        wf.trigger(f"g-{i}")
    page = client.get("/graph/chain").get_data(as_text=True)
    assert re.search(r">START</a></td><td>3</td>", page) and "INITIATED 3" in page
    assert "stateDiagram-v2" in page and "<script" not in page  # no script: mermaid_js=""
    pinned = create_app([wf], TOKEN).test_client()
    login(pinned)
    script = re.search(r"<script src=[^>]*>", pinned.get("/graph/chain").get_data(as_text=True))
    assert script and f'src="{DEFAULT_MERMAID_JS}" integrity="{DEFAULT_MERMAID_INTEGRITY}"' in script.group(0)
    own = create_app([wf], TOKEN, mermaid_js="https://cdn.example/mermaid.js").test_client()
    login(own)
    assert '<script src="https://cdn.example/mermaid.js"></script>' in own.get("/graph/chain").get_data(as_text=True)
    assert client.get("/graph/nope").status_code == 404


def test_every_page_is_sent_with_a_content_security_policy(client: FlaskClient) -> None:
    login(client)
    response = client.get("/runs")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_blueprint_in_a_flask_app_of_yours_uses_your_login(wf: Workflow[Thing, Status]) -> None:
    app = Flask(__name__)
    app.secret_key = "test"
    allowed: list[str] = []
    app.register_blueprint(
        blueprint([wf], authorize=lambda: allowed[0] if allowed else None, may_change=lambda: False),
        url_prefix="/ops/workflows",
    )
    client = app.test_client()
    assert client.get("/ops/workflows/runs").status_code == 401
    allowed.append("ada@example.com")
    page = client.get("/ops/workflows/runs").get_data(as_text=True)
    assert "ada@example.com" in page and 'href="/ops/workflows/runs/' not in page  # no runs yet
    run_id = wf.trigger("a")
    run_page = client.get(f"/ops/workflows/runs/{run_id}").get_data(as_text=True)
    assert "/pause" not in run_page  # may look, may not change
    confirm = client.get(f"/ops/workflows/runs/{run_id}/pause").get_data(as_text=True)
    token = csrf(client.get("/ops/workflows/bulk").get_data(as_text=True)) if "csrf_token" in confirm else "x"
    refused = client.post(f"/ops/workflows/runs/{run_id}/pause", data={"csrf_token": token})
    assert refused.status_code in (400, 403) and wf.lookup(run_id).run_state == RunState.INITIATED
    with pytest.raises(ConfigurationError, match="authorize"):
        blueprint([wf], authorize=None)  # type: ignore[arg-type]


def test_a_short_token_is_refused(wf: Workflow[Thing, Status]) -> None:
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        create_app([wf], "short")


def test_odd_input_is_a_clear_refusal_never_a_crash(client: FlaskClient, wf: Workflow[Thing, Status]) -> None:
    login(client)
    run_id = wf.trigger("a")
    assert client.get("/runs?page=99999999999999999999999").status_code == 200
    assert client.get("/runs?page=-1").status_code == 200
    nul = client.get("/runs?foreign_id=%00")
    assert nul.status_code == 400 and "foreign_id" in nul.get_data(as_text=True)
    assert client.get("/bulk?foreign_id=%00").status_code == 400
    assert client.get("/runs/%00").status_code == 404
    assert client.get("/runs/" + "x" * 500).status_code == 404
    backwards = client.get("/runs?from=2025-01-02T00:00&to=2025-01-01T00:00")
    assert backwards.status_code == 400 and "earlier than" in backwards.get_data(as_text=True)
    prefix = client.get(f"/runs/{run_id[:8]}")
    assert prefix.status_code == 303 and prefix.headers["Location"].endswith(f"/runs/{run_id}")
    # The confirmation form takes a prefix too; the change itself is only ever posted to the whole id.
    confirm = client.get(f"/runs/{run_id[:8]}/pause")
    assert confirm.status_code == 303 and confirm.headers["Location"].endswith(f"/runs/{run_id}/pause")
    form = client.get(confirm.headers["Location"]).get_data(as_text=True)
    assert f'action="/runs/{run_id}/pause"' in form, form
    # A script may post to the start of the id, as the command line takes one; too short a start is said so.
    paused = client.post(f"/runs/{run_id[:8]}/pause", data={"csrf_token": csrf(form)})
    assert paused.status_code == 303 and paused.headers["Location"].endswith(f"/runs/{run_id}?done=pause")
    assert wf.lookup(run_id).run_state == RunState.PAUSED
    short = client.get(f"/runs/{run_id[:3]}")
    assert short.status_code == 404 and "give at least 4 characters" in short.get_data(as_text=True)
    # A form for what the run's state does not allow is refused, not offered.
    refused = client.get(f"/runs/{run_id}/delete-data")
    assert refused.status_code == 409 and "delete-data is not possible (possible: resume, cancel)" in refused.get_data(
        as_text=True
    )


def test_scripts_use_the_token_as_a_bearer_and_a_wrong_one_is_a_401(
    client: FlaskClient, wf: Workflow[Thing, Status]
) -> None:
    run_id = wf.trigger("a")
    assert client.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    paused = client.post(f"/runs/{run_id}/pause", data={"reason": "script"}, headers=bearer)
    assert paused.status_code == 303 and wf.lookup(run_id).run_state == RunState.PAUSED


def test_logging_out_needs_the_form(client: FlaskClient) -> None:
    login(client)
    page = client.get("/runs").get_data(as_text=True)
    assert 'id="logout"' in page
    assert client.post("/logout").status_code == 400
    out = client.post("/logout", data={"csrf_token": csrf(page)})
    assert out.status_code == 303 and client.get("/runs").status_code == 302


def test_tokens_with_any_characters_are_refused_never_a_crash(client: FlaskClient) -> None:
    for header in ("Bearer été", "Bearer \udcff", "bearer été"):
        assert client.get("/runs", headers={"Authorization": header}).status_code == 401
    form = client.get("/login").get_data(as_text=True)
    assert client.post("/login", data={"csrf_token": csrf(form), "token": "été"}).status_code == 401
    assert client.post("/login", data={"csrf_token": "été", "token": TOKEN}).status_code == 400
    # The scheme is case-insensitive: a script's "bearer" is a bearer.
    assert client.get("/runs", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_the_login_page_is_sent_with_the_security_headers(client: FlaskClient) -> None:
    response = client.get("/login")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_dates_at_the_edge_of_the_calendar_are_a_bad_filter(client: FlaskClient) -> None:
    login(client)
    for query in ("from=0001-01-01T00:00%2B05:00", "to=9999-12-31T23:59:59-05:00"):
        response = client.get(f"/runs?{query}")
        assert response.status_code == 400 and "is not a date and time" in response.get_data(as_text=True), query
        assert client.get(f"/bulk?{query}").status_code == 400


def test_a_run_of_a_workflow_the_ui_does_not_show_is_not_found(wf: Workflow[Thing, Status]) -> None:
    other_builder = Builder("other", Thing, Status)
    other_builder.add_step(Status.START, start, Status.MIDDLE)
    other = other_builder.build(InProcessBroker(), wf.store, clock=FakeClock())
    app = Flask(__name__)
    app.secret_key = "test"
    app.register_blueprint(blueprint([wf], authorize=lambda: "ada"), url_prefix="/ops")
    client = app.test_client()
    hidden = other.trigger("a")
    for run_id in (hidden, hidden[:8]):
        response = client.get(f"/ops/runs/{run_id}")
        assert response.status_code == 404, response.headers.get("Location")


def test_bulk_resumes_no_more_than_the_page_showed_and_its_result_cannot_be_made_up(
    client: FlaskClient, wf: Workflow[Thing, Status]
) -> None:
    login(client)
    ids = []
    for i in range(6):
        ids.append(wf.trigger(f"b-{i}"))
        wf.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]  # oldest first
    for run_id in ids[:3]:
        wf.pause(run_id, "incident")
    page = client.get("/bulk?workflow=chain").get_data(as_text=True)
    assert "Resume these 3 runs" in page
    for run_id in ids[3:]:  # paused after the operator looked
        wf.pause(run_id, "incident")
    result = client.post(
        "/bulk",
        data={"csrf_token": csrf(page), "workflow": "chain", "confirm": "resume", "expected": "3"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Resumed 3 of 3 runs. 3 paused runs still match: resume again" in result
    assert [wf.lookup(r).run_state for r in ids] == [RunState.RUNNING] * 3 + [RunState.PAUSED] * 3
    made_up = client.get("/bulk?workflow=chain&tried=9999&resumed=9999&refused=0&sig=abc").get_data(as_text=True)
    assert "Resumed 9999" not in made_up and "3 paused runs match." in made_up
    nothing = client.post(
        "/bulk",
        data={"csrf_token": csrf(page), "workflow": "chain", "foreign_id": "b-0", "confirm": "resume", "expected": "1"},
    )
    assert "Resume this run" in client.get("/bulk?workflow=chain&foreign_id=b-3").get_data(as_text=True)
    link = nothing.headers["Location"]
    assert "Resumed 0 of 0 runs." in client.get(link).get_data(as_text=True)  # b-0 was resumed already
    other_filter = link.replace("foreign_id=b-0", "foreign_id=b-5")
    assert "Resumed" not in client.get(other_filter).get_data(as_text=True)  # the result is its filter's only


def test_a_session_ends_when_the_token_changes_and_lasts_eight_hours_at_most(wf: Workflow[Thing, Status]) -> None:
    first = create_app([wf], TOKEN, mermaid_js="", secret_key="shared").test_client()
    login(first)
    cookie = first.get_cookie("session")
    assert cookie is not None and cookie.expires is not None
    assert timedelta(hours=7) < cookie.expires - datetime.now(UTC) <= timedelta(hours=8)
    same_token = create_app([wf], TOKEN, mermaid_js="", secret_key="shared").test_client()
    same_token.set_cookie("session", cookie.value)
    assert same_token.get("/runs").status_code == 200
    new_token = create_app([wf], TOKEN + "-rotated", mermaid_js="", secret_key="shared").test_client()
    new_token.set_cookie("session", cookie.value)
    assert new_token.get("/runs").status_code == 302
    # Without a secret of its own, every process serving the UI signs with a key derived from the token.
    other_worker = create_app([wf], TOKEN, mermaid_js="").test_client()
    worker = create_app([wf], TOKEN, mermaid_js="").test_client()
    login(worker)
    session = worker.get_cookie("session")
    assert session is not None
    other_worker.set_cookie("session", session.value)
    assert other_worker.get("/runs").status_code == 200


def test_a_database_that_does_not_answer_is_a_503_page(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'runs.db'}")
    store.create_schema()
    wf = chain().build(InProcessBroker(), store, clock=FakeClock())
    client = create_app([wf], TOKEN, mermaid_js="").test_client()
    (tmp_path / "runs.db").unlink()
    (tmp_path / "runs.db").mkdir()  # where the file was, nothing SQLite can open
    store.dispose()
    response = client.get("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    page = response.get_data(as_text=True)
    assert response.status_code == 503 and "the database did not answer" in page and "sqlite" not in page.lower()
