"""Loading a project: discovery, YAML with positions, models, settings layers, cross-checks.

``load_project`` is the one entry point. It gathers *every* problem it can find into
:class:`~progressive_cli.errors.Diagnostic` records, each with ``file:line:col``, and
returns an immutable :class:`Project` only when there are no errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from progressive_cli.config import cron, pydantic_setup  # noqa: F401  (plugin discovery off: ~25 ms a start)
from progressive_cli.config.agents import BUILTIN_AGENTS, AgentsFile, BuiltinAgent
from progressive_cli.config.common import error_message, kind_of
from progressive_cli.config.integrations import (
    DATABASE_OPERATIONS,
    HttpIntegration,
    IntegrationsFile,
)
from progressive_cli.config.layers import SettingsLayers, build_settings
from progressive_cli.config.secrets import env_refs
from progressive_cli.config.settings import Settings
from progressive_cli.config.workflows import (
    ConditionStep,
    ConsensusStep,
    ForeachStep,
    ParallelStep,
    WorkflowFile,
)
from progressive_cli.config.yamlpos import PositionMap, field_name, load_yaml, read_text
from progressive_cli.engine.expressions import (
    DEFAULT_ROOTS,
    ExpressionError,
    compile_condition,
    compile_template,
    is_template,
)
from progressive_cli.errors import ConfigError, Diagnostic, Location
from progressive_cli.util import is_iso_time

AGENTS_FILE = "agents.yaml"
INTEGRATIONS_FILE = "integrations.yaml"
SETTINGS_FILE = "progressive.yaml"
WORKFLOWS_DIR = "workflows"

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Project:
    """A validated project. The runtime only ever sees this."""

    root: Path
    agents: AgentsFile
    integrations: IntegrationsFile
    workflows: dict[str, WorkflowFile]
    settings: Settings
    layers: SettingsLayers
    workflow_files: dict[str, Path] = field(default_factory=dict)
    warnings: tuple[Diagnostic, ...] = ()

    def agent(self, agent_id: str) -> Any:
        return next((a for a in self.agents.agents if a.id == agent_id), None)

    def integration(self, integration_id: str) -> Any:
        return next((i for i in self.integrations.integrations if i.id == integration_id), None)

    def state_path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.root / path


def find_project(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The project directory: ``--project``, else ``PROGRESSIVE_PROJECT``, else the current directory."""
    chosen = explicit or os.environ.get("PROGRESSIVE_PROJECT") or "."
    root = Path(chosen).expanduser()
    origin = "--project" if explicit else ("PROGRESSIVE_PROJECT" if os.environ.get("PROGRESSIVE_PROJECT") else "")
    if not root.is_dir():
        where = f" (from {origin})" if origin else ""
        raise ConfigError([Diagnostic(Location(str(root)), f"project directory does not exist{where}")])
    markers = (AGENTS_FILE, INTEGRATIONS_FILE, SETTINGS_FILE, WORKFLOWS_DIR)
    if not any((root / m).exists() for m in markers):
        raise ConfigError([Diagnostic(
            Location(str(root)),
            "not a progressive project (no agents.yaml, integrations.yaml, progressive.yaml or workflows/); "
            "run 'progressive init' to create one, or pass --project DIR",
        )])
    return root.resolve()


class _Collector:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.diagnostics: list[Diagnostic] = []

    def display(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def add(self, location: Location, message: str, severity: str = "error") -> None:
        self.diagnostics.append(Diagnostic(location, message, severity))

    def read(self, path: Path, *, allow_empty: bool = False) -> tuple[Any, PositionMap] | None:
        display = self.display(path)
        try:
            text = read_text(path, display)
            data, positions = load_yaml(text, display, allow_empty=allow_empty)
        except ConfigError as exc:
            self.diagnostics.extend(exc.diagnostics)
            return None
        self.diagnostics.extend(positions.problems)
        return data, positions

    def model(self, cls: type[BaseModel], data: Any, positions: PositionMap) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.add(positions.locate(()), f"expected a mapping at the top level, got {kind_of(data)}")
            return None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                location, message = describe_error(err, data, positions)
                self.add(location, message)
            return None


def data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Path_, bool]:
    """Map a pydantic ``loc`` onto a path in the YAML data, skipping union tags.

    A tag (``"wait"`` in ``("steps", 4, "wait", "duration")``) follows the element that
    entered a discriminated union, and equals that mapping's ``type``/``kind`` value.
    Returns the path and whether its last element is a key absent from the data.
    """
    path: list[str | int] = []
    current = data
    fresh = True  # just entered `current`: the next loc part may be its union tag
    for i, part in enumerate(loc):
        if fresh and isinstance(current, dict) and isinstance(part, str) and part in (
            current.get("type"), current.get("kind")
        ):
            fresh = False
            continue
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            path.append(part)
            current = current[part]
            fresh = True
        elif isinstance(current, dict) and i == len(loc) - 1 and isinstance(part, str):
            path.append(part)
            return tuple(path), True
        else:
            fresh = False
    return tuple(path), False


def describe_error(err: Mapping[str, Any], data: Any, positions: PositionMap) -> tuple[Location, str]:
    """One pydantic error -> (location, message naming the field)."""
    kind = err["type"]
    path, absent = data_path(data, tuple(err["loc"]))
    message = str(err["msg"])
    ctx = err.get("ctx") or {}
    if kind == "unknown_key":
        return positions.locate(path, key=True), f"{field_name(path)}: {message}"
    if kind == "missing" and absent:
        parent = path[:-1]
        return positions.locate(parent), f"{field_name(parent)}: missing required key '{path[-1]}'"
    if kind == "union_tag_invalid":  # point at the bad `type:`/`kind:` value itself
        path = (*path, str(ctx.get("discriminator", "'type'")).strip("'"))
    if kind == "string_pattern_mismatch" and path and path[-1] in ("id", "name", "as", "output"):
        message = "must be a lower-case id (letters, digits, '-' and '_', starting with a letter)"
    else:
        message = error_message(err)
    return positions.locate(path), f"{field_name(path)}: {message}"


# --- loading -------------------------------------------------------------------------------------------
def load_project(
    root: Path,
    *,
    overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    strict: bool = False,
) -> Project:
    """Load and check everything; raise ConfigError listing every problem found."""
    env = os.environ if environ is None else environ
    c = _Collector(root)

    agents_data = c.read(root / AGENTS_FILE) if (root / AGENTS_FILE).exists() else ({}, PositionMap(AGENTS_FILE))
    agents = c.model(AgentsFile, *agents_data) if agents_data else None

    integ_path = root / INTEGRATIONS_FILE
    integ_data = c.read(integ_path) if integ_path.exists() else ({}, PositionMap(INTEGRATIONS_FILE))
    integrations = c.model(IntegrationsFile, *integ_data) if integ_data else None

    settings_path = root / SETTINGS_FILE
    settings_file = c.read(settings_path, allow_empty=True) if settings_path.exists() else None
    settings, layers, problems = build_settings(
        settings_file[0] if settings_file else None,
        settings_file[1] if settings_file else None,
        env,
        overrides or {},
    )
    c.diagnostics.extend(problems)

    workflows: dict[str, WorkflowFile] = {}
    workflow_files: dict[str, Path] = {}
    workflow_positions: dict[str, PositionMap] = {}
    wf_dir = root / WORKFLOWS_DIR
    files = sorted([*wf_dir.glob("*.yaml"), *wf_dir.glob("*.yml")]) if wf_dir.is_dir() else []
    broken: set[str] = set()  # workflows whose file has errors: references to them are not "unknown"
    for path in files:
        loaded = c.read(path)
        if loaded is None:
            broken.add(path.stem)
            continue
        model = c.model(WorkflowFile, *loaded)
        if model is None:
            name = loaded[0].get("name") if isinstance(loaded[0], dict) else None
            broken.add(name if isinstance(name, str) else path.stem)
            continue
        if model.name in workflows:
            first = c.display(workflow_files[model.name])
            c.add(loaded[1].locate(("name",)), f"name: duplicate workflow name '{model.name}' (also in {first})")
            continue
        workflows[model.name] = model
        workflow_files[model.name] = path
        workflow_positions[model.name] = loaded[1]

    # Cross-checks run on whatever validated, so one broken file does not hide the others' problems.
    agent_pos = agents_data[1] if agents_data else PositionMap(AGENTS_FILE)
    integ_positions = integ_data[1] if integ_data else PositionMap(INTEGRATIONS_FILE)
    _CrossChecker(c, agents, agent_pos, integrations, integ_positions, workflows, workflow_positions, broken).run()
    _check_env(c, agents, agent_pos, integrations, integ_positions, layers, env)

    if strict:
        c.diagnostics = [Diagnostic(d.location, d.message) for d in c.diagnostics]
    errors = [d for d in c.diagnostics if d.severity == "error"]
    if errors or agents is None or integrations is None or settings is None:
        raise ConfigError(sorted(c.diagnostics, key=_order))
    return Project(
        root=root,
        agents=agents,
        integrations=integrations,
        workflows=workflows,
        settings=settings,
        layers=layers,
        workflow_files=workflow_files,
        warnings=tuple(sorted(c.diagnostics, key=_order)),
    )


def _order(d: Diagnostic) -> tuple[str, int, int]:
    return (d.location.file, d.location.line, d.location.col)


def _check_env(
    c: _Collector,
    agents: AgentsFile | None,
    agent_pos: PositionMap,
    integrations: IntegrationsFile | None,
    integ_pos: PositionMap,
    layers: SettingsLayers,
    env: Mapping[str, str],
) -> None:
    severity = "warning"  # --strict promotes every warning at the end of load_project
    items: list[tuple[Any, PositionMap, Path_]] = [
        (a, agent_pos, ("agents", i)) for i, a in enumerate(agents.agents if agents else [])
    ] + [(x, integ_pos, ("integrations", i)) for i, x in enumerate(integrations.integrations if integrations else [])]
    for model, positions, path in items:
        if not model.enabled:
            continue
        data = model.dump()
        for name in sorted(set(env_refs(data))):
            if name not in env:
                c.add(
                    _find_ref(positions, path, data, name),
                    f"{field_name(path)} ({model.id}): environment variable {name} is not set",
                    severity,
                )
    for name, source in layers.env_refs_missing(env):
        c.add(source, f"environment variable {name} is not set", severity)


def _find_ref(positions: PositionMap, base: Path_, data: Any, name: str) -> Location:
    needle = "${env:" + name + "}"
    stack: list[tuple[Path_, Any]] = [(base, data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and needle in value:
            located = positions.locate(path)
            if located.line:
                return located
        elif isinstance(value, dict):
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
    return positions.locate(base)


# --- cross references -------------------------------------------------------------------------------------
COMBINE_ROOTS = frozenset({"branches", "succeeded", "failed"})
"""What a parallel step's `combine` expression sees besides the usual roots."""
TEMPLATE_FIELDS = ("params", "value", "data", "path", "query", "headers", "json", "inputs")


@dataclass
class _StepInfo:
    step: Any
    path: Path_
    scope: frozenset[str]


class _CrossChecker:
    def __init__(
        self,
        c: _Collector,
        agents: AgentsFile | None,
        agent_pos: PositionMap,
        integrations: IntegrationsFile | None,
        integ_pos: PositionMap,
        workflows: dict[str, WorkflowFile],
        wf_pos: dict[str, PositionMap],
        broken: set[str],
    ) -> None:
        self.broken_workflows = broken
        self.c = c
        self.agents = agents
        self.agent_pos = agent_pos
        self.integrations = integrations
        self.integ_pos = integ_pos
        self.workflows = workflows
        self.wf_pos = wf_pos
        # None when that file itself failed: references into it are then not checked
        self.agent_ids = {a.id: a for a in agents.agents} if agents else None
        self.integration_ids = {i.id: i for i in integrations.integrations} if integrations else None
        self.capabilities = {cap for a in agents.agents for cap in a.capabilities} if agents else None

    def run(self) -> None:
        agent_list = self.agents.agents if self.agents else []
        self._duplicates(agent_list, self.agent_pos, "agents", "agent")
        if self.integrations:
            self._duplicates(self.integrations.integrations, self.integ_pos, "integrations", "integration")
            self._integrations(self.integrations.integrations)
        for i, agent in enumerate(agent_list):
            if isinstance(agent, BuiltinAgent) and agent.implementation not in BUILTIN_AGENTS:
                where = ("agents", i, "builtin") if agent.builtin else ("agents", i, "id")
                self.c.add(
                    self.agent_pos.locate(where),
                    f"{field_name(where)}: unknown built-in agent '{agent.implementation}'; "
                    f"built-ins are: {', '.join(BUILTIN_AGENTS)}",
                )
        for name, wf in self.workflows.items():
            self._workflow(wf, self.wf_pos[name])
        self._cycles()

    def _integrations(self, integrations: list[Any]) -> None:
        from progressive_cli.integrations.conditions import ROOTS

        assert self.integration_ids is not None
        for i, item in enumerate(integrations):
            health = getattr(item, "health", None)
            for c, source in enumerate(health.conditions if health else []):
                self._condition(self.integ_pos, ("integrations", i, "health", "conditions", c), source, ROOTS, None)
            embedding = getattr(item, "embedding", None)
            if embedding is not None:
                target = self.integration_ids.get(embedding.integration)
                where = ("integrations", i, "embedding", "integration")
                if target is None:
                    self._err(self.integ_pos, where, f"unknown integration '{embedding.integration}'"
                              + _hint(embedding.integration, self.integration_ids))
                elif not isinstance(target, HttpIntegration):
                    self._err(self.integ_pos, where, f"'{embedding.integration}' is a {target.type} database; "
                              "embeddings come from an http integration")

    def _duplicates(self, items: list[Any], positions: PositionMap, key: str, what: str) -> None:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                line = positions.locate((key, seen[item.id], "id")).line
                self.c.add(positions.locate((key, i, "id")), f"{key}[{i}].id: duplicate {what} id '{item.id}' "
                           f"(first at line {line})")
            else:
                seen[item.id] = i

    def _err(self, pos: PositionMap, path: Path_, message: str, severity: str = "error", *,
             key: bool = False) -> None:
        self.c.add(pos.locate(path, key=key), f"{field_name(path)}: {message}", severity)

    # -- workflows
    def _walk(self, steps: list[Any], path: Path_, scope: frozenset[str]) -> Iterator[_StepInfo]:
        for i, step in enumerate(steps):
            yield from self._walk_one(step, (*path, i), scope)

    def _walk_one(self, step: Any, path: Path_, scope: frozenset[str]) -> Iterator[_StepInfo]:
        yield _StepInfo(step, path, scope)
        if step.fallback is not None:
            yield from self._walk_one(step.fallback, (*path, "fallback"), scope)
        if isinstance(step, ConditionStep):
            yield from self._walk(step.then, (*path, "then"), scope)
            yield from self._walk(step.else_, (*path, "else"), scope)
            for b, branch in enumerate(step.branches):
                yield from self._walk(branch.steps, (*path, "branches", b, "steps"), scope)
        elif isinstance(step, ParallelStep):
            for name, steps in step.branches.items():
                yield from self._walk(steps, (*path, "branches", name), scope)
        elif isinstance(step, ForeachStep):
            inner = scope | {step.as_, f"{step.as_}_index"}
            yield from self._walk(step.steps, (*path, "steps"), inner)

    def _workflow(self, wf: WorkflowFile, pos: PositionMap) -> None:
        infos = list(self._walk(wf.steps, ("steps",), DEFAULT_ROOTS))
        step_ids: dict[str, Path_] = {}
        outputs: set[str] = set()
        for info in infos:
            if info.step.id in step_ids:
                first = pos.locate((*step_ids[info.step.id], "id")).line
                self._err(pos, (*info.path, "id"), f"duplicate step id '{info.step.id}' (first at line {first})")
            else:
                step_ids[info.step.id] = info.path
            if info.step.output:
                outputs.add(info.step.output)
        names = _Names(set(wf.inputs), set(step_ids), outputs)
        for name, spec in wf.inputs.items():
            self._input_default(pos, name, spec)
        for info in infos:
            self._step(wf, pos, info, names)
        for key, value in wf.outputs.items():
            self._templates(pos, ("outputs", key), value, DEFAULT_ROOTS, names)
        for t, trigger in enumerate(wf.triggers):
            tpath: Path_ = ("triggers", t)
            if trigger.type == "cron":
                problem = cron.check(trigger.cron)
                if problem:
                    self._err(pos, (*tpath, "cron"), f"invalid cron expression '{trigger.cron}': {problem}")
                self._timezone(pos, (*tpath, "timezone"), trigger.timezone)
            if trigger.type == "event" and trigger.filter:
                self._condition(pos, (*tpath, "filter"), trigger.filter, frozenset({"event"}), None)
            roots = frozenset({"event"}) if trigger.type == "event" else frozenset()
            self._templates(pos, (*tpath, "inputs"), trigger.inputs, roots, None)
            self._call_inputs(pos, tpath, wf, trigger.inputs)

    def _timezone(self, pos: PositionMap, path: Path_, name: str) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self._err(pos, path, f"unknown time zone '{name}'")

    def _input_default(self, pos: PositionMap, name: str, spec: Any) -> None:
        from progressive_cli.engine.inputs import InputError, coerce

        for key, value in (("default", spec.default), *((f"enum[{i}]", v) for i, v in enumerate(spec.enum or []))):
            if value is None:
                continue
            try:
                coerce(name, spec, value)
            except InputError as exc:
                self._err(pos, ("inputs", name, key.split("[")[0]), exc.message)

    def _call_inputs(self, pos: PositionMap, path: Path_, wf: WorkflowFile, given: Mapping[str, Any]) -> None:
        for key in given:
            if key not in wf.inputs:
                self._err(pos, (*path, "inputs", key), f"workflow '{wf.name}' has no input '{key}'"
                          + _hint(key, wf.inputs), key=True)
        for key, spec in wf.inputs.items():
            if spec.required and spec.default is None and key not in given:
                self._err(pos, path, f"workflow '{wf.name}' needs input '{key}'")

    def _step(self, wf: WorkflowFile, pos: PositionMap, info: _StepInfo, names: _Names) -> None:
        step, path, scope = info.step, info.path, info.scope
        if step.if_ is not None:
            self._condition(pos, (*path, "if"), step.if_, scope, names)
        if getattr(step, "combine", None) is not None:
            self._condition(pos, (*path, "combine"), step.combine, scope | COMBINE_ROOTS, names)
        for attr in TEMPLATE_FIELDS:
            key = "json" if attr == "json" else attr
            value = getattr(step, attr if attr != "json" else "json_", None)
            if value is not None and not (attr == "inputs" and step.type != "sub_workflow"):
                self._templates(pos, (*path, key), value, scope, names)
        kind = step.type
        if kind in ("agent_call", "consensus") and self.agent_ids is not None and self.capabilities is not None:
            agents = step.agents if isinstance(step, ConsensusStep) else ([step.agent] if step.agent else [])
            for a, agent_id in enumerate(agents):
                where = (*path, "agents", a) if isinstance(step, ConsensusStep) else (*path, "agent")
                agent = self.agent_ids.get(agent_id)
                if agent is None:
                    self._err(pos, where, f"unknown agent '{agent_id}'" + _hint(agent_id, self.agent_ids))
                elif not agent.enabled:
                    self._err(pos, where, f"agent '{agent_id}' is disabled", "warning")
            if step.capability is not None and step.capability not in self.capabilities:
                self._err(pos, (*path, "capability"), f"no agent provides capability '{step.capability}'"
                          + _hint(step.capability, self.capabilities))
        elif kind in ("api_call", "database_operation"):
            if self.integration_ids is not None:
                self._integration_step(pos, path, step)
        elif kind == "condition":
            if step.condition is not None:
                self._condition(pos, (*path, "condition"), step.condition, scope, names)
            for b, branch in enumerate(step.branches):
                self._condition(pos, (*path, "branches", b, "when"), branch.when, scope, names)
        elif kind == "foreach":
            if isinstance(step.items, str):
                self._condition(pos, (*path, "items"), step.items, scope, names)
            else:
                self._templates(pos, (*path, "items"), step.items, scope, names)
        elif kind == "wait" and isinstance(step.until, str):
            if is_template(step.until) or is_iso_time(step.until):
                self._templates(pos, (*path, "until"), step.until, scope, names)
            else:  # a bare expression, as in `until: inputs.send_at`
                self._condition(pos, (*path, "until"), step.until, scope, names)
        elif kind == "sub_workflow":
            target = self.workflows.get(step.workflow)
            if target is None and step.workflow not in self.broken_workflows:
                self._err(pos, (*path, "workflow"), f"unknown workflow '{step.workflow}'"
                          + _hint(step.workflow, self.workflows))
            elif target is not None:
                self._call_inputs(pos, path, target, step.inputs)

    def _integration_step(self, pos: PositionMap, path: Path_, step: Any) -> None:
        assert self.integration_ids is not None
        integration = self.integration_ids.get(step.integration)
        where = (*path, "integration")
        if integration is None:
            self._err(pos, where, f"unknown integration '{step.integration}'"
                      + _hint(step.integration, self.integration_ids))
            return
        is_http = isinstance(integration, HttpIntegration)
        if step.type == "api_call" and not is_http:
            self._err(pos, where, f"'{step.integration}' is a {integration.type} database; api_call needs an "
                      "http integration (use database_operation)")
        elif step.type == "database_operation":
            if is_http:
                self._err(pos, where, f"'{step.integration}' is an http integration; use api_call")
                return
            allowed = DATABASE_OPERATIONS[integration.type]
            if step.operation not in allowed:
                self._err(pos, (*path, "operation"), f"{integration.type} has no operation '{step.operation}'; "
                          f"expected one of: {', '.join(allowed)}")
            if integration.type == "postgres":
                self._static_sql(pos, (*path, "params"), step.params)
        if not integration.enabled:
            self._err(pos, where, f"integration '{step.integration}' is disabled; the step fails until it is "
                      "enabled", "warning")

    def _static_sql(self, pos: PositionMap, path: Path_, params: dict[str, Any]) -> None:
        """SQL text is never built from values: values go in `params`, as $1-style placeholders' data."""
        statements = params.get("statements")
        found = [((*path, "sql"), params.get("sql"))]
        if isinstance(statements, list):
            found += [((*path, "statements", n, "sql"), s.get("sql")) for n, s in enumerate(statements)
                      if isinstance(s, dict)]
        for where, sql in found:
            if isinstance(sql, str) and is_template(sql):
                self._err(pos, where, "SQL must be static text; pass values with placeholders (%s or "
                          "%(name)s) and 'params', never ${{ }} inside the SQL")

    def _condition(self, pos: PositionMap, path: Path_, source: str, roots: frozenset[str],
                   names: _Names | None) -> None:
        self._compiled(pos, path, compile_condition, source, roots, names)

    def _templates(self, pos: PositionMap, path: Path_, value: Any, roots: frozenset[str],
                   names: _Names | None) -> None:
        stack: list[tuple[Path_, Any]] = [(path, value)]
        while stack:
            where, item = stack.pop()
            if isinstance(item, str) and is_template(item):
                self._compiled(pos, where, compile_template, item, roots, names)
            elif isinstance(item, dict):
                stack.extend(((*where, k), v) for k, v in item.items())
            elif isinstance(item, list):
                stack.extend(((*where, i), v) for i, v in enumerate(item))

    def _compiled(self, pos: PositionMap, path: Path_, compile_fn: Any, source: str, roots: frozenset[str],
                  names: _Names | None) -> None:
        """Compile one expression field; report its error, or references to unknown names."""
        try:
            compiled = compile_fn(source, roots)
        except ExpressionError as exc:
            self._expr_error(pos, path, exc)
            return
        if names:
            for expr in getattr(compiled, "expressions", None) or [compiled]:
                self._references(pos, path, expr.references, names)

    def _expr_error(self, pos: PositionMap, path: Path_, exc: ExpressionError) -> None:
        self.c.add(pos.locate_in(path, exc.offset), f"{field_name(path)}: invalid expression: {exc.message}")

    def _references(self, pos: PositionMap, path: Path_, refs: set[tuple[str, str | None]], names: _Names) -> None:
        for root, key in sorted(refs, key=lambda r: (r[0], r[1] or "")):
            known = {"inputs": names.inputs, "steps": names.steps, "vars": names.outputs}.get(root)
            if key is None or known is None or key in known:
                continue
            what = {"inputs": "input", "steps": "step", "vars": "step output"}[root]
            self._err(pos, path, f"{root}.{key}: no {what} named '{key}'" + _hint(key, known))

    def _cycles(self) -> None:
        graph: dict[str, list[tuple[str, Path_]]] = {name: [] for name in self.workflows}
        for name, wf in self.workflows.items():
            for info in self._walk(wf.steps, ("steps",), DEFAULT_ROOTS):
                if info.step.type == "sub_workflow" and info.step.workflow in self.workflows:
                    graph[name].append((info.step.workflow, info.path))
        reported: set[frozenset[str]] = set()
        for start in sorted(graph):
            stack: list[tuple[str, list[str]]] = [(start, [start])]
            while stack:
                node, trail = stack.pop()
                for target, path in graph[node]:
                    if target == start:
                        cycle = frozenset(trail)
                        if cycle not in reported:
                            reported.add(cycle)
                            chain = " -> ".join([*trail, start])
                            self._err(self.wf_pos[node], (*path, "workflow"), f"sub-workflow cycle: {chain}")
                    elif target not in trail and len(trail) < 64:
                        stack.append((target, [*trail, target]))


@dataclass
class _Names:
    inputs: set[str]
    steps: set[str]
    outputs: set[str]


def _hint(name: str, choices: Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
