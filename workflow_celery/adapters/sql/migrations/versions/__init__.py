"""Revision scripts; alembic skips this file, setuptools needs it to ship the directory."""
