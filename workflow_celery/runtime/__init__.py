"""Process machinery: the threads a worker process runs beside its work.

Nothing here starts on import. Whoever owns a process starts and stops them:
the Celery worker's bootstep, or the in-process broker.
"""
