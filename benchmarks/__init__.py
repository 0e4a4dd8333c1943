"""Throughput and latency benchmarks: workflow-celery against a bare Celery task chain.

``python -m benchmarks.run`` runs both on the same Redis and PostgreSQL with real
``celery worker`` processes; ``python -m benchmarks.profile_worker`` profiles one
workflow worker. See ``docs/performance.md``.
"""
