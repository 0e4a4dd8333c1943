"""SQL record store: PostgreSQL (psycopg 3) or SQLite, through SQLAlchemy Core."""

from .store import SQLStore

__all__ = ["SQLStore"]
