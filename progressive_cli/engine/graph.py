"""A workflow as a flow chart: Mermaid or Graphviz DOT text (`progressive workflows graph`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Graph:
    nodes: list[tuple[str, str, str]] = field(default_factory=list)  # id, label, shape
    edges: list[tuple[str, str, str, bool]] = field(default_factory=list)  # from, to, label, dashed
    clusters: list[tuple[str, list[str]]] = field(default_factory=list)
    counter: int = 0

    def node(self, label: str, shape: str = "box") -> str:
        self.counter += 1
        node_id = f"n{self.counter}"
        self.nodes.append((node_id, label, shape))
        return node_id

    def edge(self, a: str, b: str, label: str = "", dashed: bool = False) -> None:
        self.edges.append((a, b, label, dashed))


def _label(step: Any) -> str:
    target = {
        "agent_call": lambda s: s.agent or f"capability {s.capability}",
        "consensus": lambda s: ",".join(s.agents) or f"capability {s.capability}",
        "api_call": lambda s: f"{s.integration} {s.method} {s.path}",
        "database_operation": lambda s: f"{s.integration}.{s.operation}",
        "sub_workflow": lambda s: f"workflow {s.workflow}",
        "emit": lambda s: s.event,
        "wait": lambda s: f"{s.duration:g}s" if s.duration is not None else f"until {s.until}",
    }.get(step.type)
    detail = f"\n{target(step)}" if target else ""
    method = f".{step.method}" if getattr(step, "method", None) and step.type in ("agent_call", "consensus") else ""
    return f"{step.id} ({step.type}){detail}{method}"


def _chain(g: _Graph, steps: list[Any], entry: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Draw ``steps`` in sequence after ``entry`` (nodes with edge labels); return the open ends."""
    ends = entry
    for step in steps:
        ends = _step(g, step, ends)
    return ends


def _connect(g: _Graph, ends: list[tuple[str, str]], node: str) -> None:
    for source, label in ends:
        g.edge(source, node, label)


def _step(g: _Graph, step: Any, entry: list[tuple[str, str]]) -> list[tuple[str, str]]:
    guard = f"if {step.if_}" if step.if_ else ""
    if step.type == "condition":
        decision = g.node(f"{step.id}?\n{step.condition or 'switch'}", "diamond")
        _connect(g, [(s, guard or lbl) for s, lbl in entry], decision)
        ends: list[tuple[str, str]] = []
        branches = [("then", step.then)] if step.condition else [
            (f"when {b.when}", b.steps) for b in step.branches]
        for label, steps in [*branches, ("else", step.else_)]:
            if steps:
                ends += _chain(g, steps, [(decision, label)])
            else:
                ends.append((decision, label))
        return ends
    if step.type in ("parallel", "foreach"):
        fork = g.node(f"{step.id} ({step.type})" + (f"\n{step.items} x{step.concurrency}"
                                                    if step.type == "foreach" else f"\n{step.join}"), "fork")
        _connect(g, [(s, guard or lbl) for s, lbl in entry], fork)
        join = g.node(f"end {step.id}", "join")
        groups = step.branches.items() if step.type == "parallel" else [("each item", step.steps)]
        for label, steps in groups:
            before = g.counter
            for end, end_label in _chain(g, steps, [(fork, label)]):
                g.edge(end, join, end_label)
            g.clusters.append((f"{step.id}: {label}", [f"n{i}" for i in range(before + 1, g.counter + 1)]))
        return [(join, "")]
    node = g.node(_label(step), "box")
    _connect(g, [(s, guard or lbl) for s, lbl in entry], node)
    if step.fallback is not None:
        fb = g.node(_label(step.fallback), "box")
        g.edge(node, fb, "on error", dashed=True)
        return [(node, ""), (fb, "")]
    return [(node, "")]


def build(workflow: Any) -> _Graph:
    g = _Graph()
    start = g.node(f"start {workflow.name}", "start")
    ends = _chain(g, workflow.steps, [(start, "")])
    end = g.node("end", "start")
    _connect(g, ends, end)
    return g


def _text(label: str) -> str:
    return label.replace('"', "'")


def mermaid(workflow: Any) -> str:
    g = build(workflow)
    shapes = {"box": ('["', '"]'), "diamond": ('{"', '"}'), "fork": ('[["', '"]]'), "join": ('(("', '"))'),
              "start": ('(["', '"])')}
    lines = ["flowchart TD"]
    for node_id, label, shape in g.nodes:
        left, right = shapes[shape]
        lines.append(f"    {node_id}{left}{_text(label).replace(chr(10), '<br/>')}{right}")
    for a, b, label, dashed in g.edges:
        arrow = "-.->" if dashed else "-->"
        lines.append(f"    {a} {arrow}|{_text(label)}| {b}" if label else f"    {a} {arrow} {b}")
    return "\n".join(lines) + "\n"


def dot(workflow: Any) -> str:
    g = build(workflow)
    shapes = {"box": "box", "diamond": "diamond", "fork": "box3d", "join": "circle", "start": "oval"}
    lines = [f'digraph "{_text(workflow.name)}" {{', "  rankdir=TB;", '  node [fontname="Helvetica"];']
    for i, (title, members) in enumerate(g.clusters):
        if members:
            lines.append(f'  subgraph cluster_{i} {{ label="{_text(title)}"; style=dashed; '
                         + " ".join(f"{m};" for m in members) + " }")
    for node_id, label, shape in g.nodes:
        lines.append(f'  {node_id} [label="{_text(label).replace(chr(10), chr(92) + "n")}", shape={shapes[shape]}];')
    for a, b, label, dashed in g.edges:
        attrs = [f'label="{_text(label)}"'] if label else []
        if dashed:
            attrs.append("style=dashed")
        lines.append(f"  {a} -> {b}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"
