"""Celery settings for workflow workers.

Load with ``app.config_from_object("celeryconfig")``. Every value can be
overridden from the environment; the defaults point at a local Redis and
PostgreSQL.
"""

from __future__ import annotations

import os

broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
workflow_database_url = os.environ.get("WORKFLOW_CELERY_DATABASE_URL", "postgresql+psycopg://127.0.0.1:5432/postgres")

# Messages carry ids only, as JSON; nothing is ever pickled.
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"
# The database is the record of every run; Celery results would only duplicate it.
task_ignore_result = True
result_backend = None

# Acknowledge after the step committed. For your other tasks, give the message back if the worker
# process dies mid-task. Workflow tasks override this on themselves: their doorbell stays in the
# database, the relay rings it again and the lost attempt is counted, so a step that keeps killing
# its process pauses the run instead of looping.
task_acks_late = True
task_reject_on_worker_lost = True
# One message at a time per process: a slow step never hides others behind it.
worker_prefetch_multiplier = 1

# Redis re-delivers unacknowledged messages after this long. The outbox relay
# already rings a lost doorbell after ``redeliver_after`` (30 s by default), so
# this only bounds how long a duplicate can arrive late; duplicates are dropped
# by the version check.
broker_transport_options = {
    "visibility_timeout": int(os.environ.get("WORKFLOW_CELERY_VISIBILITY_TIMEOUT", "3600")),
}
broker_connection_retry_on_startup = True

# Steps should be short. At the soft limit Celery raises SoftTimeLimitExceeded inside the step: it
# counts as a failed attempt (retried with backoff, pausing the run after pause_after_err_count).
# At the hard limit the process is killed: a failed attempt too, counted by the next one.
# Workers refuse to start when the hard limit plus the workflows' max_retry_countdown is not
# below the Redis visibility_timeout.
task_soft_time_limit = int(os.environ.get("WORKFLOW_CELERY_TASK_SOFT_TIME_LIMIT", "240"))
task_time_limit = int(os.environ.get("WORKFLOW_CELERY_TASK_TIME_LIMIT", "300"))

worker_send_task_events = True
task_send_sent_event = False
