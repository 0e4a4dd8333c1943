"""Deleting a run's data leaves the object type's zero value; a type without one is refused at build."""

from __future__ import annotations

import collections.abc
import enum
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, NamedTuple, NewType, TypedDict, TypeVar
from uuid import UUID

import pytest
from pydantic import BaseModel, Field

from tests.unit.workflows import Status
from workflow_celery import Builder, ConfigurationError, InProcessBroker, MemoryStore, RunState, Workflow
from workflow_celery.core.codec import NoZeroValue, zero_value

X = TypeVar("X")


class Kind(enum.IntEnum):
    PERSONAL = 1
    BUSINESS = 2


class NoKinds(enum.Enum):
    pass


@dataclass
class Address:
    street: str
    number: int
    lines: list[str] = field(default_factory=list)


@dataclass
class Account:
    id: str
    balance: int
    ratio: float
    active: bool
    tags: list[str]
    limits: dict[str, int]
    members: set[str]
    pair: tuple[int, str]
    nickname: str | None
    address: Address
    kind: Kind
    opened: datetime
    currency: str = "EUR"  # a declared default is kept, as decoding a missing field gives it


class Profile(BaseModel):
    email: str
    verified: bool


class Line(BaseModel):
    sku: str
    quantity: int


class Customer(BaseModel):
    id: str
    age: int
    score: float
    profile: Profile
    lines: list[Line]
    note: str | None
    tier: Literal["gold", "silver"]
    country: str = "NL"


@dataclass
class Box(Generic[X]):
    item: X


class Point(NamedTuple):
    x: int
    y: float
    label: str = "origin"


class Movie(TypedDict, total=False):
    title: str
    year: int


class Film(TypedDict):
    title: str
    year: int


UserId = NewType("UserId", str)


@dataclass
class Tree:
    name: str
    children: list[Tree]
    parent: Tree | None


@dataclass
class Validated:
    id: str

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("id must not be empty")


class Constrained(BaseModel):
    id: str = Field(min_length=1)


@dataclass
class Loop:
    name: str
    next: Loop


@dataclass
class Kinded:
    id: str
    kind: NoKinds


def _workflow(object_type: Any, **options: Any) -> tuple[Workflow[Any, Status], InProcessBroker]:
    b = Builder("zeros", object_type, Status)
    b.add_step(Status.START, lambda run: Status.END, Status.END)
    broker = InProcessBroker()
    return b.build(broker, MemoryStore(), **options), broker


def _delete(wf: Workflow[Any, Status], broker: InProcessBroker, value: Any) -> Any:
    run_id = wf.trigger("f-1", initial_value=value)
    broker.drain()
    wf.delete_data(run_id, "erasure request")
    broker.drain()
    record = wf.lookup(run_id)
    assert record.run_state == RunState.DATA_DELETED
    assert all(b"Ada" not in h.object for h in wf.history(run_id))
    return record.object


def test_a_dataclass_with_required_fields_reads_back_as_its_zero_value() -> None:
    wf, broker = _workflow(Account)
    ada = Account(
        id="acc-Ada",
        balance=120,
        ratio=0.5,
        active=True,
        tags=["Ada"],
        limits={"Ada": 1},
        members={"Ada"},
        pair=(7, "Ada"),
        nickname="Ada",
        address=Address(street="Ada Lane", number=4, lines=["Ada"]),
        kind=Kind.BUSINESS,
        opened=datetime(2024, 1, 2, tzinfo=UTC),
        currency="GBP",
    )
    assert _delete(wf, broker, ada) == Account(
        id="",
        balance=0,
        ratio=0.0,
        active=False,
        tags=[],
        limits={},
        members=set(),
        pair=(0, ""),
        nickname=None,
        address=Address(street="", number=0),
        kind=Kind.PERSONAL,
        opened=datetime(1, 1, 1, tzinfo=UTC),
        currency="EUR",
    )


def test_a_pydantic_model_with_required_fields_reads_back_as_its_zero_value() -> None:
    wf, broker = _workflow(Customer)
    ada = Customer(
        id="c-Ada",
        age=36,
        score=9.5,
        profile=Profile(email="ada@example.com", verified=True),
        lines=[Line(sku="Ada", quantity=1)],
        note="Ada",
        tier="silver",
        country="GB",
    )
    assert _delete(wf, broker, ada) == Customer(
        id="",
        age=0,
        score=0.0,
        profile=Profile(email="", verified=False),
        lines=[],
        note=None,
        tier="gold",
        country="NL",
    )


def test_a_dict_reads_back_empty() -> None:
    wf, broker = _workflow(dict[str, Any])
    assert _delete(wf, broker, {"name": "Ada"}) == {}


@pytest.mark.parametrize(
    ("annotation", "zero"),
    [
        (str, ""),
        (int, 0),
        (float, 0.0),
        (bool, False),
        (bytes, b""),
        (Decimal, Decimal(0)),
        (UUID, UUID(int=0)),
        (date, date.min),
        (time, time(0, 0)),
        (timedelta, timedelta(0)),
        (datetime, datetime(1, 1, 1, tzinfo=UTC)),
        (Any, None),
        (int | None, None),
        (int | str, 0),
        (NoKinds | str, ""),
        (Literal["b", "a"], "b"),
        (Kind, Kind.PERSONAL),
        (list[int], []),
        (frozenset[str], frozenset()),
        (tuple[int, ...], ()),
        (tuple[str, Kind], ("", Kind.PERSONAL)),
        (collections.abc.Sequence[int], []),
        (collections.abc.Mapping[str, int], {}),
        (Annotated[int, "meta"], 0),
        (UserId, ""),
        (Box[int], Box(item=0)),
        (Box[Address], Box(item=Address(street="", number=0))),
        (Point, Point(x=0, y=0.0, label="origin")),
        (Movie, {}),
        (Film, {"title": "", "year": 0}),
        (Tree, Tree(name="", children=[], parent=None)),
    ],
    ids=repr,
)
def test_zero_values(annotation: Any, zero: Any) -> None:
    value = zero_value(annotation)
    assert value == zero and type(value) is type(zero)


@pytest.mark.parametrize(
    ("object_type", "problem"),
    [
        (Validated, "Validated(id) refuses zeros: ValueError: id must not be empty"),
        (Constrained, "its zero value is not valid: id: String should have at least 1 character"),
        (Loop, "Loop.next: Loop requires an instance of itself"),
        (Kinded, "Kinded.kind: enum NoKinds has no member"),
    ],
)
def test_a_type_without_a_zero_value_is_refused_at_build(object_type: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _workflow(object_type)
    message = str(refused.value)
    assert f"{object_type.__name__} has no zero value to replace the data of a deleted run with" in message
    assert problem in message and "custom_delete" in message and "workflow=zeros" in message
    assert "\n" not in message


def test_custom_delete_makes_a_type_without_a_zero_value_deletable() -> None:
    def redact(value: Validated) -> Validated:
        return Validated(id="redacted")

    wf, broker = _workflow(Validated, custom_delete=redact)
    assert _delete(wf, broker, Validated(id="Ada")) == Validated(id="redacted")


def test_trigger_without_an_initial_value_still_needs_a_default() -> None:
    # Starting a run from zeros would hide a forgotten initial_value; only deletion uses them.
    wf, _ = _workflow(Account)
    with pytest.raises(ConfigurationError, match="Account has required fields: pass initial_value to trigger"):
        wf.trigger("f-1")
    assert wf.list() == []


def test_no_zero_value_names_the_field() -> None:
    with pytest.raises(NoZeroValue, match=r"^Box\.item: Kinded\.kind: enum NoKinds has no member$"):
        zero_value(Box[Kinded])
