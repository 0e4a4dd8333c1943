"""The graph of statuses a workflow's steps may move a run between."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import ConfigurationError


def status_slug(status: enum.IntEnum) -> str:
    """The lower-case name used in queue and task names."""
    return status.name.lower()


@dataclass
class StatusGraph:
    """Directed graph of statuses; nodes keep the order they were first seen in."""

    workflow: str
    nodes: list[int] = field(default_factory=list)
    edges: dict[int, list[int]] = field(default_factory=dict)
    _incoming: set[int] = field(default_factory=set)

    def add_node(self, node: int) -> None:
        if node <= 0:
            raise ConfigurationError(
                f"status {node} is reserved: 0 and negative values cannot be part of the graph",
                workflow=self.workflow,
            )
        if node not in self.nodes:
            self.nodes.append(node)

    def add_edges(self, source: int, destinations: Iterable[int]) -> None:
        self.add_node(source)
        targets = self.edges.setdefault(source, [])
        for dest in destinations:
            self.add_node(dest)
            if dest not in targets:
                targets.append(dest)
            self._incoming.add(dest)

    def destinations(self, source: int) -> list[int]:
        return list(self.edges.get(source, []))

    def is_terminal(self, node: int) -> bool:
        """A terminal status is reached and never left."""
        return node in self.nodes and not self.edges.get(node)

    def starting_nodes(self) -> list[int]:
        """Statuses that are left and never entered, in order of definition."""
        return [n for n in self.nodes if self.edges.get(n) and n not in self._incoming]

    def terminal_nodes(self) -> list[int]:
        return [n for n in self.nodes if self.is_terminal(n)]

    def __contains__(self, node: object) -> bool:
        return node in self.nodes
