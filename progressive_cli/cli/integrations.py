"""`integrations`, `breakers` and `db`: what integrations.yaml declares, live checks, one-off requests
and database operations, and the circuit breakers every process shares through the state store."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from progressive_cli.cli.app import ControlWaitOpt, OutputOpt, apply_control, new_typer, state, with_store
from progressive_cli.cli.catalog import _lookup, _show
from progressive_cli.cli.output import OutputFormat, emit, iso_time, printable, say
from progressive_cli.errors import ExitCode, UsageError

integrations_app = new_typer("External APIs and databases (integrations.yaml).")
breakers_app = new_typer("Circuit breakers of integrations and agent instances, shared through the state store.")


def register(app: typer.Typer) -> None:
    app.add_typer(integrations_app, name="integrations")
    app.add_typer(breakers_app, name="breakers")
    app.command("db")(db)


def _json_arg(text: str | None, flag: str, *, mapping: bool = True) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag}: not JSON ({exc.msg} at column {exc.colno})") from None
    if mapping and not isinstance(value, dict):
        raise UsageError(f"{flag}: expected a JSON object")
    return value


def _with_hub(ctx: typer.Context, use: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    """Run ``use(hub, store)`` with the project's integrations on its store; metrics and breaker changes
    are flushed, clients and the store closed, whatever happens."""
    from progressive_cli.integrations.hub import Integrations
    from progressive_cli.store import project_store
    from progressive_cli.util import run_async

    project = state(ctx).project()

    async def go() -> Any:
        store = project_store(project)
        hub = Integrations(project.integrations.integrations, store)
        try:
            return await use(hub, store)
        finally:
            try:
                await hub.close()
            finally:
                await store.close()

    try:
        return run_async(go())
    except KeyboardInterrupt:
        say("interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


# --- integrations -------------------------------------------------------------------------------------
def _integration_row(item: Any) -> dict[str, Any]:
    from progressive_cli.config.common import format_duration
    from progressive_cli.config.secrets import env_refs, missing

    target = getattr(item, "base_url", None) or getattr(item, "dsn", None) or getattr(item, "url", None) \
        or getattr(item, "uri", None) or getattr(item, "path", None) or getattr(item, "host", None)
    limits = [f"{r.requests}/{format_duration(r.per)}" for r in getattr(item, "rate_limits", [])]
    breaker = getattr(item, "circuit_breaker", None)
    refs = env_refs(item.dump())
    unset = missing(refs)
    return {
        "id": item.id,
        "type": item.type,
        "target": target,
        "auth": getattr(getattr(item, "auth", None), "type", None),
        "rate_limits": limits,
        "breaker": f"{breaker.fail_max} fails / {format_duration(breaker.reset_timeout)}" if breaker else None,
        "secrets": "none" if not refs else ("missing " + ", ".join(unset) if unset else "set"),
        "enabled": item.enabled,
    }


@integrations_app.command("list")
def integrations_list(ctx: typer.Context, output: OutputOpt = None) -> None:
    """List integrations with their auth, rate limits, breaker and whether their secrets are set."""
    project = state(ctx).project()
    rows = [_integration_row(i) for i in project.integrations.integrations]
    emit(rows, state(ctx).fmt(output), columns=[
        ("id", "ID"), ("type", "TYPE"), ("target", "TARGET"), ("auth", "AUTH"), ("rate_limits", "RATE LIMITS"),
        ("breaker", "BREAKER"), ("secrets", "SECRETS"), ("enabled", "ENABLED"),
    ])


@integrations_app.command("show")
def integrations_show(ctx: typer.Context, integration_id: str = typer.Argument(..., metavar="INTEGRATION"),
                      output: OutputOpt = None) -> None:
    """Show one integration's configuration (secret references, never their values)."""
    project = state(ctx).project()
    item = _lookup({i.id: i for i in project.integrations.integrations}, integration_id, "integration")
    _show(ctx, output, item.dump())


def _chosen(ctx: typer.Context, names: list[str] | None) -> list[Any]:
    known = {i.id: i for i in state(ctx).project().integrations.integrations}
    return [_lookup(known, n, "integration") for n in names] if names else list(known.values())


@integrations_app.command("test")
def integrations_test(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(metavar="[INTEGRATION]...")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each check.")] = 10.0,
    output: OutputOpt = None,
) -> None:
    """Check live connectivity: each http integration's health request (and its conditions), each
    database's ping. Disabled integrations are skipped unless named. Exits 5 if any check fails."""
    import asyncio

    chosen = _chosen(ctx, names)
    targets = [i for i in chosen if i.enabled or names]

    async def check(hub: Any, _store: Any) -> list[dict[str, Any]]:
        async def one(item: Any) -> dict[str, Any]:
            try:
                async with asyncio.timeout(timeout):
                    return await hub.test(item.id, allow_disabled=bool(names))
            except TimeoutError:
                return {"integration": item.id, "type": item.type, "ok": False, "error": "TIMEOUT",
                        "detail": f"no answer within {timeout:g}s", "latency_ms": round(timeout * 1000, 3)}
        return list(await asyncio.gather(*(one(i) for i in targets)))

    rows = _with_hub(ctx, check)
    fmt = state(ctx).fmt(output)
    emit(rows, fmt, columns=[("integration", "INTEGRATION"), ("type", "TYPE"), ("ok", "OK"), ("error", "ERROR"),
                             ("latency_ms", "LATENCY_MS"), ("detail", "DETAIL")])
    skipped = len(chosen) - len(targets)
    if skipped and fmt is OutputFormat.table:
        say(f"{skipped} disabled integration(s) skipped; name one to check it anyway")
    if any(not r["ok"] for r in rows):
        raise typer.Exit(int(ExitCode.UNAVAILABLE))


@integrations_app.command("status")
def integrations_status(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(metavar="[INTEGRATION]...")] = None,
    output: OutputOpt = None,
) -> None:
    """Requests, success rate, average and p95 latency, rate-limit hits, retries, breaker rejections and
    openings per integration, from every process that used it, with its breaker's state."""
    from progressive_cli.integrations import breaker_name
    from progressive_cli.mca.metrics import summarise

    chosen = _chosen(ctx, names)

    async def read(store: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await store.integration_metrics(), await store.breakers("integration:")

    metrics, breakers = with_store(ctx, read)
    by_name = {m["integration"]: m for m in metrics}
    states = {b["name"]: b for b in breakers}
    rows = []
    for item in chosen:
        m = by_name.get(item.id, {})
        figures = summarise(m)
        breaker = states.get(breaker_name(item.id))
        rows.append({
            "integration": item.id, "type": item.type, "enabled": item.enabled,
            "requests": figures["calls"], "success": figures["success"], "failure": figures["failure"],
            "success_rate": figures["success_rate"], "avg_ms": figures["avg_ms"], "p95_ms": figures["p95_ms"],
            "rate_limited": m.get("rate_limited", 0), "retries": m.get("retries", 0),
            "rejected": m.get("rejected", 0), "breaker_opens": m.get("breaker_opens", 0),
            "breaker": (breaker or {}).get("state", "closed") if getattr(item, "circuit_breaker", None) else None,
            "last_error": figures["last_error"], "last_call_at": figures["last_call_at"],
        })
    emit(rows, state(ctx).fmt(output), columns=[
        ("integration", "INTEGRATION"), ("type", "TYPE"), ("requests", "REQUESTS"), ("success_rate", "OK_RATE"),
        ("avg_ms", "AVG_MS"), ("p95_ms", "P95_MS"), ("rate_limited", "RATE_LIMITED"), ("retries", "RETRIES"),
        ("rejected", "REJECTED"), ("breaker_opens", "OPENS"), ("breaker", "BREAKER"), ("last_error", "LAST_ERROR"),
    ])


@integrations_app.command("call")
def integrations_call(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="INTEGRATION"),
    method: str = typer.Argument(..., metavar="METHOD", help="GET, POST, PUT, PATCH, DELETE or HEAD."),
    path: str = typer.Argument(..., metavar="PATH", help="Path under the integration's base_url, e.g. /foods/list."),
    params: Annotated[str | None, typer.Option("--params", help="Query parameters as a JSON object.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="A JSON request body.")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", metavar="'NAME: VALUE'",
                                                     help="A request header; repeat for more.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", help="Send this Idempotency-Key (a POST with one is retried like a GET).")] = None,
    output: OutputOpt = None,
) -> None:
    """Make one request through the integration's full stack (auth, rate limit, breaker, retries,
    metrics) and print the response body (table) or the whole response (json, yaml)."""
    method = method.upper()
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"):
        raise UsageError(f"METHOD {method!r}: expected GET, POST, PUT, PATCH, DELETE or HEAD")
    if not path.startswith("/"):
        raise UsageError(f"PATH {path!r}: must start with / (it is joined to the integration's base_url)")
    query = _json_arg(params, "--params")
    body = _json_arg(data, "--data", mapping=False)
    headers: dict[str, str] = {}
    for item in header or []:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise UsageError(f"--header {item!r}: expected 'NAME: VALUE'")
        if not item.isascii() or any(c in item for c in "\r\n\0"):
            raise UsageError(f"--header {item!r}: headers are ASCII on one line")
        headers[key.strip()] = value.strip()
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    _lookup({i.id: i for i in state(ctx).project().integrations.integrations}, name, "integration")

    async def call(hub: Any, _store: Any) -> Any:
        return await hub.api_call(name, method, path, query=query, headers=headers, json_body=body)

    response = _with_hub(ctx, call)
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table:
        say(f"{response['status']} in {response['elapsed_ms']:.1f} ms ({response['attempts']} attempt(s))")
        payload = response["body"]
        if isinstance(payload, dict | list):
            emit(payload, OutputFormat.json)
        elif payload is not None:
            sys.stdout.write(printable(str(payload)) + "\n")
    else:
        emit(response, fmt)


# --- breakers -----------------------------------------------------------------------------------------
@breakers_app.command("list")
def breakers_list(ctx: typer.Context, output: OutputOpt = None) -> None:
    """Every breaker: integrations (`integration:<id>`) and agent instances (`agent:<id>@<instance>`),
    with state, counters, when it opened, seconds to half-open and the last error."""
    project = state(ctx).project()
    stored = with_store(ctx, lambda store: store.breakers())
    fmt = state(ctx).fmt(output)
    from progressive_cli.integrations import breaker_rows

    rows = breaker_rows(project, stored, time.time())
    symbols = {"closed": "● closed", "open": "○ open", "half-open": "◐ half-open"}
    for row in rows:
        row["display"] = symbols.get(row["state"], row["state"])
        row["opened_at"] = iso_time(row["opened_at"])
        if row["held_open"] and fmt is OutputFormat.table:
            row["half_open_in_s"] = "held"
    if fmt is not OutputFormat.table:
        for row in rows:
            row.pop("display")
    emit(rows, fmt, columns=[
        ("breaker", "BREAKER"), ("display", "STATE"), ("failures", "FAILURES"), ("successes", "SUCCESSES"),
        ("opened_at", "OPENED_AT"), ("half_open_in_s", "HALF_OPEN_IN_S"), ("last_error", "LAST_ERROR"),
    ])


def _integration_breaker(ctx: typer.Context, name: str) -> tuple[str, float]:
    """(breaker name, reset timeout) for an integration id or `integration:<id>`."""
    from progressive_cli.integrations import breaker_name

    if name.startswith("agent:"):
        raise UsageError(f"{name}: agent instance breakers live in each calling process; they close on their "
                         "own after reset_timeout (agents.yaml `breaker:`)")
    integration_id = name.removeprefix("integration:")
    known = {i.id: i for i in state(ctx).project().integrations.integrations}
    item = _lookup(known, integration_id, "integration")
    if getattr(item, "circuit_breaker", None) is None:
        raise UsageError(f"integration '{item.id}' has no circuit breaker (circuit_breaker: null)")
    return breaker_name(item.id), float(item.circuit_breaker.reset_timeout)


@breakers_app.command("reset")
def breakers_reset(ctx: typer.Context, name: str = typer.Argument(..., metavar="INTEGRATION"),
                   wait: ControlWaitOpt = 10.0, output: OutputOpt = None) -> None:
    """Close an integration's breaker and clear its counters. Applied by the daemon when one runs (else by
    this command); every process using the integration picks the change up from the store within a second."""
    breaker, _ = _integration_breaker(ctx, name)
    _done(ctx, output, apply_control(ctx, "breaker.reset", breaker, wait=wait)["result"])


@breakers_app.command("open")
def breakers_open(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="INTEGRATION"),
    hold: Annotated[str | None, typer.Option(
        "--for", metavar="DURATION", help="Half-open after this long (e.g. 10m); default: until reset.")] = None,
    wait: ControlWaitOpt = 10.0,
    output: OutputOpt = None,
) -> None:
    """Force an integration's breaker open: calls fail fast with CIRCUIT_BREAKER_OPEN and nothing is sent,
    until `breakers reset` (or until --for has passed, when it half-opens as usual). Applied by the daemon
    when one runs (else by this command)."""
    from progressive_cli.config.common import parse_duration

    seconds = None
    if hold is not None:
        try:
            seconds = parse_duration(hold)
        except ValueError as exc:
            raise UsageError(f"--for {hold!r}: {exc}") from None
        if seconds <= 0:
            raise UsageError(f"--for {hold!r}: must be longer than 0s")
    breaker, reset_timeout = _integration_breaker(ctx, name)
    row = apply_control(ctx, "breaker.open", breaker, {"hold": seconds, "reset_timeout": reset_timeout}, wait=wait)
    _done(ctx, output, row["result"])


def _done(ctx: typer.Context, output: OutputFormat | None, result: dict[str, Any]) -> None:
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table:
        say(f"{result['breaker']}: {result['previous']} -> {result['state']}", style="ok")
    else:
        emit({**result, "opened_at": iso_time(result["opened_at"])}, fmt)


# --- db -----------------------------------------------------------------------------------------------
def db(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="INTEGRATION"),
    operation: str = typer.Argument(..., metavar="OPERATION",
                                    help="postgres: query|execute|transaction; redis: get|set|delete|mget|hget|hset|"
                                         "publish; mongodb: find|find_one|insert_*|update_*|delete_*|aggregate; "
                                         "vector: add|search|update|delete."),
    params: Annotated[str, typer.Option(
        "--params", "-p", help="The operation's parameters as a JSON object, "
        "e.g. '{\"sql\": \"SELECT * FROM t WHERE id = %s\", \"params\": [7]}'.")] = "{}",
    write: Annotated[bool, typer.Option("--write", help="Allow an operation that changes data.")] = False,
    output: OutputOpt = None,
) -> None:
    """Run one database operation. Read-only unless --write: writing operations are refused, and
    PostgreSQL statements run in a READ ONLY transaction."""
    from progressive_cli.config.integrations import DATABASE_OPERATIONS, HttpIntegration

    data = _json_arg(params, "--params")
    item = _lookup({i.id: i for i in state(ctx).project().integrations.integrations}, name, "integration")
    if isinstance(item, HttpIntegration):
        raise UsageError(f"integration '{name}' is an http API; use: progressive integrations call {name} GET /...")
    if operation not in DATABASE_OPERATIONS[item.type]:
        raise UsageError(f"OPERATION {operation!r}: {item.type} has {', '.join(DATABASE_OPERATIONS[item.type])}")

    async def run(hub: Any, _store: Any) -> Any:
        return await hub.db_call(name, operation, data, read_only=not write)

    result = _with_hub(ctx, run)
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table and isinstance(result, list) and result and all(isinstance(r, dict) for r in result):
        emit(result, fmt)
    elif fmt is OutputFormat.table and not isinstance(result, dict | list):
        sys.stdout.write(printable("" if result is None else str(result)) + "\n")
    else:
        emit(result, OutputFormat.json if fmt is OutputFormat.table else fmt)
