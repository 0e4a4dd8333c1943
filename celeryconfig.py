"""Celery settings of the examples, tests and benchmarks: an example of your own settings module.

Load with ``app.config_from_object("celeryconfig")``. It takes the recommended
settings shipped with the package (``workflow_celery.celeryconfig``) and adds
the broker and database URLs; every value below can be overridden from the
environment, and the defaults point at a local Redis and PostgreSQL.
"""

from __future__ import annotations

import os

from workflow_celery.celeryconfig import *  # noqa: F403  (the recommended settings, overridden below)

# Redis (redis://host:6379/0) or RabbitMQ (amqp://user:password@host:5672/vhost).
broker_url = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
# Not a Celery setting: the examples build their SQLStore from it.
workflow_database_url = os.environ.get("WORKFLOW_CELERY_DATABASE_URL", "postgresql+psycopg://127.0.0.1:5432/postgres")

# Redis re-delivers unacknowledged messages after this long. The outbox relay
# already rings a lost doorbell after ``redeliver_after`` (30 s by default), so
# this only bounds how long a duplicate can arrive late; duplicates are dropped
# by the version check. RabbitMQ ignores it.
broker_transport_options = {
    "visibility_timeout": int(os.environ.get("WORKFLOW_CELERY_VISIBILITY_TIMEOUT", "3600")),
}
# RabbitMQ closes the channel of a consumer that holds a message unacknowledged longer than its
# consumer_timeout. Say what your server's is (seconds); workers check their time limits against it.
workflow_consumer_timeout = int(os.environ.get("WORKFLOW_CELERY_CONSUMER_TIMEOUT", "1800"))

task_soft_time_limit = int(os.environ.get("WORKFLOW_CELERY_TASK_SOFT_TIME_LIMIT", "240"))
task_time_limit = int(os.environ.get("WORKFLOW_CELERY_TASK_TIME_LIMIT", "300"))
