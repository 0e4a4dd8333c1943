"""Mermaid ``stateDiagram-v2`` text of a workflow's status graph."""

from __future__ import annotations

from typing import Any

from .definition import Definition


def mermaid(definition: Definition[Any, Any]) -> str:
    graph = definition.graph
    lines = [
        "---",
        f"title: Workflow diagram of {definition.name}",
        "---",
        "stateDiagram-v2",
        "\tdirection LR",
        "",
    ]
    for node in sorted(graph.nodes):
        lines.append(f"\t{node}: {definition.status_name(node)}")
    lines.append("")
    for start in graph.starting_nodes():
        lines.append(f"\t[*] --> {start}")
    for source in graph.nodes:
        dests = graph.destinations(source)
        if len(dests) == 1:
            lines.append(f"\t{source} --> {dests[0]}")
        elif len(dests) > 1:
            lines.append(f"\tstate {source}_branching <<choice>>")
            lines.append(f"\t{source} --> {source}_branching")
            lines.extend(f"\t{source}_branching --> {d}" for d in dests)
    for end in graph.terminal_nodes():
        lines.append(f"\t{end} --> [*]")
    return "\n".join(lines) + "\n"
