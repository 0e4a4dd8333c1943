"""Workflows for the Flask extension's unit tests: built on the in-process broker and a memory store."""

from __future__ import annotations

from workflow_celery import InProcessBroker, MemoryStore

from .workflows import chain

wf = chain().build(InProcessBroker(), MemoryStore())
