"""JSON encoding of workflow objects: dataclasses, pydantic v2 models, dicts.

pydantic's ``TypeAdapter`` is used for all three so nested dataclasses and
models round-trip exactly; nothing is ever pickled.

Deleting a run's data replaces its object with the type's *zero value*: what
a reader gets when every required field is missing, each field holding the
zero of its type (see ``zero_value``).
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import enum
import types
import typing
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from .errors import ConfigurationError, SerializationError

T = TypeVar("T")


class ObjectCodec(Generic[T]):
    def __init__(self, workflow: str, object_type: type[T]) -> None:
        self.workflow = workflow
        self.object_type = object_type
        self._zero: bytes | None = None
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

    def zero(self) -> T:
        """The object a run's data is replaced with when it is deleted: the type's zero value.

        Computed once; every call returns a fresh copy. Raises
        ``ConfigurationError`` when the type has no zero value, or when its zero
        value does not survive the JSON round trip (a validator refuses it).
        """
        if self._zero is None:
            self._zero = self._encoded_zero()
        return self._adapter.validate_json(self._zero)

    def _encoded_zero(self) -> bytes:
        name = getattr(self.object_type, "__name__", repr(self.object_type))
        hint = "pass custom_delete=fn to build() to decide what a deleted run keeps"
        try:
            data = self._adapter.dump_json(zero_value(self.object_type))
            # What is written must read back, or a deleted run could never be looked at again.
            self._adapter.validate_json(data)
        except NoZeroValue as exc:
            problem = str(exc)
        except ValidationError as exc:
            problem = "its zero value is not valid: " + "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}" for e in exc.errors()
            )
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            problem = f"its zero value cannot be stored as JSON: {exc}"
        else:
            return data
        raise ConfigurationError(
            f"{name} has no zero value to replace the data of a deleted run with ({problem}); {hint}",
            workflow=self.workflow,
        )

    def _runtime_type(self) -> type[Any]:
        origin = getattr(self.object_type, "__origin__", None)
        return origin if isinstance(origin, type) else self.object_type


# --------------------------------------------------------------------------- zero values


class NoZeroValue(Exception):
    """The type has no zero value; the message says which part of it lacks one."""


_SCALAR_ZEROS: dict[Any, Any] = {
    bool: False,
    int: 0,
    float: 0.0,
    str: "",
    bytes: b"",
    Decimal: Decimal(0),
    UUID: UUID(int=0),
    timedelta: timedelta(0),
    date: date.min,
    # Aware, like every time this library hands out; 0001-01-01 is also the zero time elsewhere.
    datetime: datetime.min.replace(tzinfo=UTC),
    time: time.min,
}

# Abstract collection types decode to these concrete ones.
_EMPTY_COLLECTIONS: dict[Any, Any] = {
    list: list,
    set: set,
    frozenset: frozenset,
    dict: dict,
    collections.deque: collections.deque,
    collections.defaultdict: dict,
    collections.OrderedDict: collections.OrderedDict,
    collections.Counter: collections.Counter,
    collections.abc.Iterable: list,
    collections.abc.Collection: list,
    collections.abc.Sequence: list,
    collections.abc.MutableSequence: list,
    collections.abc.Set: set,
    collections.abc.MutableSet: set,
    collections.abc.Mapping: dict,
    collections.abc.MutableMapping: dict,
}

_UNWRAPPED = (typing.Required, typing.NotRequired, typing.Final)


def zero_value(tp: Any) -> Any:
    """The zero value of a type: what a field of that type holds when nothing was stored.

    ``""``, ``0``, ``0.0``, ``False``, ``b""``; empty lists, sets, tuples and
    dicts; ``None`` for optionals, ``Any`` and ``object``; the first member of
    an enum and the first value of a ``Literal``; the first alternative of a
    union that has a zero value; ``0001-01-01T00:00:00+00:00``, ``date.min``,
    ``time.min``, ``timedelta(0)`` and the nil UUID. Dataclasses, pydantic models,
    TypedDicts and named tuples get their declared defaults where they have one
    and the zero of the field's type otherwise, recursively. Any other class is
    called with no arguments. Raises ``NoZeroValue`` naming the field that has
    none (an enum without members, a type that needs arguments, a record type
    that requires an instance of itself, a constructor that refuses zeros).
    """
    return _zero(tp, {}, ())


def _zero(tp: Any, typevars: dict[Any, Any], building: tuple[Any, ...]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated or origin in _UNWRAPPED:
        return _zero(args[0], typevars, building)
    if isinstance(tp, dataclasses.InitVar):
        return _zero(tp.type, typevars, building)
    if isinstance(tp, TypeVar):
        if tp in typevars:
            return _zero(typevars[tp], {}, building)
        return None if tp.__bound__ is None else _zero(tp.__bound__, typevars, building)
    if isinstance(tp, typing.NewType):
        return _zero(tp.__supertype__, typevars, building)
    alias_type = getattr(typing, "TypeAliasType", None)  # ``type X = ...`` (Python 3.12+)
    if alias_type is not None and isinstance(tp, alias_type):
        return _zero(tp.__value__, typevars, building)
    if tp is Any or tp is object or tp is None or tp is type(None):
        return None
    if origin is typing.Union or origin is types.UnionType:
        if type(None) in args:
            return None
        problems = []
        for arm in args:
            try:
                return _zero(arm, typevars, building)
            except NoZeroValue as exc:
                problems.append(str(exc))
        raise NoZeroValue(" and ".join(problems))
    if origin is typing.Literal:
        return args[0]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = list(tp)
        if not members:
            raise NoZeroValue(f"enum {tp.__name__} has no member")
        return members[0]
    if isinstance(tp, type) and tp in _SCALAR_ZEROS:
        return _SCALAR_ZEROS[tp]
    base = origin if origin is not None else tp
    if base is tuple:
        if not args or args[-1] is Ellipsis or args == ((),):
            return ()
        return tuple(_zero(a, typevars, building) for a in args)
    if isinstance(base, type) and base in _EMPTY_COLLECTIONS:
        return _EMPTY_COLLECTIONS[base]()
    if not isinstance(base, type):
        raise NoZeroValue(f"{tp!r} has no zero value")
    if base in building:
        raise NoZeroValue(f"{base.__name__} requires an instance of itself")
    if origin is not None:
        params = getattr(origin, "__parameters__", ())
        typevars = {**typevars, **dict(zip(params, (typevars.get(a, a) for a in args), strict=False))}
    return _instance(base, typevars, (*building, base))


def _instance(cls: type[Any], typevars: dict[Any, Any], building: tuple[Any, ...]) -> Any:
    """A record type (dataclass, model, TypedDict, named tuple) with zeros in its required fields."""

    def zeros(fields: dict[str, Any]) -> dict[str, Any]:
        values = {}
        for name, annotation in fields.items():
            try:
                values[name] = _zero(annotation, typevars, building)
            except NoZeroValue as exc:
                raise NoZeroValue(f"{cls.__name__}.{name}: {exc}") from None
        return values

    if issubclass(cls, BaseModel):
        required = {name: info.annotation for name, info in cls.model_fields.items() if info.is_required()}
        # Not validated here: the codec's JSON round trip validates it, which is where it counts.
        return cls.model_construct(**zeros(required))
    kwargs: dict[str, Any] = {}
    if dataclasses.is_dataclass(cls) or typing.is_typeddict(cls) or _is_named_tuple(cls):
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:  # unresolvable annotations raise NameError, TypeError, ...
            raise NoZeroValue(f"the annotations of {cls.__name__} cannot be resolved: {exc}") from None
        if typing.is_typeddict(cls):
            return zeros({k: v for k, v in hints.items() if k in cls.__required_keys__})
        if dataclasses.is_dataclass(cls):
            names = [
                f.name
                for f in cls.__dataclass_fields__.values()
                if f.init
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
                and typing.get_origin(hints.get(f.name)) is not typing.ClassVar
            ]
        else:
            names = [f for f in cls._fields if f not in cls._field_defaults]
        kwargs = zeros({name: hints.get(name, Any) for name in names})
    try:
        return cls(**kwargs)
    except Exception as exc:  # a constructor or __post_init__ refusing zeros may raise anything
        raise NoZeroValue(f"{cls.__name__}({', '.join(kwargs)}) refuses zeros: {type(exc).__name__}: {exc}") from None


def _is_named_tuple(cls: type[Any]) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")
