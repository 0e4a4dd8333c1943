"""Recommended Celery settings for the apps that run workflows.

Load them with ``app.config_from_object("workflow_celery.celeryconfig")``, or
build your own settings module on them::

    from workflow_celery.celeryconfig import *  # then override what you need

They name no broker and no database: give the broker to ``Celery(broker=...)``
or ``$CELERY_BROKER_URL`` (Celery reads it first), the database to your store.
Durations are in seconds. This module holds settings only, so that Celery
reads nothing else from it.
"""

# Messages carry ids only, as JSON; nothing is ever pickled, and a worker accepts nothing else.
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

# Steps should be short. At the soft limit Celery raises SoftTimeLimitExceeded inside the step: a
# failed attempt, retried with backoff. At the hard limit the process is killed: a failed attempt too,
# counted by the next one. Workers refuse to start unless the hard limit plus the workflows'
# max_retry_countdown stays below the broker's redelivery bound: Redis' visibility_timeout
# (broker_transport_options, 3600 by default) or RabbitMQ's consumer_timeout (below).
task_soft_time_limit = 240
task_time_limit = 300

# RabbitMQ's consumer_timeout, which a worker cannot ask the server for: 1800 is RabbitMQ's default
# since 3.8.17. Declare your server's value (its rabbitmq.conf, in seconds rather than milliseconds),
# or None if it has none.
workflow_consumer_timeout = 1800

# A worker started before its broker waits for it instead of exiting.
broker_connection_retry_on_startup = True

# Flower and `celery events` see tasks start and finish.
worker_send_task_events = True
task_send_sent_event = False
