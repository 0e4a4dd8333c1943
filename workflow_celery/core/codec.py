"""JSON encoding of workflow objects: dataclasses, pydantic v2 models, dicts.

pydantic's ``TypeAdapter`` is used for all three so nested dataclasses and
models round-trip exactly; nothing is ever pickled.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from .errors import ConfigurationError, SerializationError

T = TypeVar("T")


class ObjectCodec(Generic[T]):
    def __init__(self, workflow: str, object_type: type[T]) -> None:
        self.workflow = workflow
        self.object_type = object_type
        try:
            self._adapter: TypeAdapter[T] = TypeAdapter(object_type)
        except Exception as exc:  # pydantic raises several types for unsupported types
            raise ConfigurationError(
                f"object type {object_type!r} cannot be stored as JSON: {exc}", workflow=workflow
            ) from exc

    def encode(self, value: T, *, run_id: str | None = None, foreign_id: str | None = None) -> bytes:
        if not isinstance(value, self._runtime_type()):
            raise SerializationError(
                f"object is a {type(value).__name__}, expected {self.object_type.__name__}",
                workflow=self.workflow,
                foreign_id=foreign_id,
                run_id=run_id,
            )
        try:
            return self._adapter.dump_json(value)
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"object is not JSON-serialisable: {exc}",
                workflow=self.workflow,
                foreign_id=foreign_id,
                run_id=run_id,
            ) from exc

    def decode(self, data: bytes | str, *, run_id: str | None = None) -> T:
        try:
            return self._adapter.validate_json(data)
        except ValidationError as exc:
            raise SerializationError(
                f"stored object does not match {self.object_type.__name__}: {exc}",
                workflow=self.workflow,
                run_id=run_id,
            ) from exc

    def default(self) -> T:
        """The value a run starts with when ``trigger`` gets no initial value."""
        try:
            return self.object_type()
        except TypeError as exc:
            raise ConfigurationError(
                f"{self.object_type.__name__} has required fields: pass initial_value to trigger",
                workflow=self.workflow,
            ) from exc

    def _runtime_type(self) -> type[Any]:
        origin = getattr(self.object_type, "__origin__", None)
        return origin if isinstance(origin, type) else self.object_type
