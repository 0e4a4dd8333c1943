"""Resuming paused runs in bulk from the web UI: bounded per click, and a result page a link cannot make up.

One click resumes the oldest of the runs a filter matches, no more than the
number the page showed, ``BULK_LIMIT`` at most and for ``BULK_BUDGET_S`` at
most, so that a request stays inside a WSGI server's timeout. The result
travels in the redirect's query (post, redirect, get: a reload resumes
nothing again), signed together with its workflow, filter and time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ..core.errors import WorkflowError
from ..core.workflow import Workflow

BULK_LIMIT = 1_000
"""Runs resumed by one click at most: about 8 s here, well inside a WSGI server's request timeout (30 s)."""
BULK_BUDGET_S = 10.0
"""One click stops resuming after this long; the page says how many still match, for the next click."""
BULK_RESULT_SHOWN_S = 600
"""How long the link of a bulk resume's result page shows the result."""
COUNTS = ("tried", "resumed", "refused", "at")


def expected_count(text: str) -> int | None:
    """The number of runs the confirmation page showed (its form's ``expected``), None when it is not one."""
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        return None
    return min(int(text), BULK_LIMIT)


def resume_all(wf: Workflow[Any, Any], filters: dict[str, Any], limit: int) -> dict[str, int]:
    """Resume up to ``limit`` of the matching runs, oldest first, for at most ``BULK_BUDGET_S`` seconds."""
    ids = [r.run_id for r in wf.store.list_runs(wf.name, **filters, limit=limit, order="asc")] if limit else []
    resumed, refused, tried = 0, 0, 0
    deadline = time.monotonic() + BULK_BUDGET_S
    for run_id in ids:
        if time.monotonic() > deadline:
            break
        tried += 1
        try:
            wf.resume(run_id)
            resumed += 1
        except WorkflowError:
            refused += 1
    return {"tried": tried, "resumed": resumed, "refused": refused, "at": int(time.time())}


def sign(key: bytes, workflow: str, query: Mapping[str, str], result: Mapping[str, Any]) -> str:
    """The signature of a bulk result: for this workflow, filter and time only."""
    kept = json.dumps({k: v for k, v in query.items() if k != "workflow"}, sort_keys=True)
    text = json.dumps(["bulk", workflow, kept, *(result.get(k, 0) for k in COUNTS)])
    return hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


def genuine(key: bytes, workflow: str, query: Mapping[str, str], result: Mapping[str, int], sent: str) -> bool:
    """Whether ``sent`` signs this result, and the result is recent enough to show."""
    recent = 0 <= time.time() - result.get("at", 0) <= BULK_RESULT_SHOWN_S
    return recent and hmac.compare_digest(sign(key, workflow, query, result).encode(), sent.encode("utf-8", "replace"))
