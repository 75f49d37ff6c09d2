"""`events` and `dlq`: the event bus in the state store — tail and publish events, see each subscription's
position and queues, and look after the dead-letter queue."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from progressive_cli.cli.app import ControlWaitOpt, OutputOpt, apply_control, new_typer, state, with_store
from progressive_cli.cli.output import OutputFormat, emit, iso_time, say, to_json_line
from progressive_cli.errors import ExitCode, NotFoundError, UsageError

events_app = new_typer("The event bus: every event in the state store, CloudEvents-shaped.")
dlq_app = new_typer("The dead-letter queue: events a subscription failed to handle after its retries.")


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events")
    app.add_typer(dlq_app, name="dlq")


def _row(event: Any) -> dict[str, Any]:
    return {"seq": event.seq, "time": iso_time(event.time, "milliseconds"),
            "type": event.type, "subject": event.subject, "data": to_json_line(event.data)[:200]}


@events_app.command("tail")
def events_tail(
    ctx: typer.Context,
    type_: Annotated[str | None, typer.Option("--type", "-t", metavar="PATTERN",
                                              help="Only types matching this pattern, e.g. 'workflow.*'.")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many of the newest to show first.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until Ctrl-C.")] = False,
    output: OutputOpt = None,
) -> None:
    """The newest events (a table, or one CloudEvent per line with -o json), optionally followed live."""
    import asyncio
    import fnmatch
    import re

    matcher = re.compile(fnmatch.translate(type_)) if type_ else None
    fmt = state(ctx).fmt(output)

    def show(batch: list[Any], header: bool) -> None:
        chosen = [e for e in batch if matcher is None or matcher.fullmatch(e.type)]
        if fmt is OutputFormat.table:
            if header:
                emit([_row(e) for e in chosen], fmt, columns=[
                    ("seq", "SEQ"), ("time", "TIME"), ("type", "TYPE"), ("subject", "SUBJECT"), ("data", "DATA")])
            else:  # followed: one line per event, as it comes
                for row in map(_row, chosen):
                    sys.stdout.write("  ".join(str(row[k] if row[k] is not None else "-") for k in row) + "\n")
        elif fmt is OutputFormat.json:
            for event in chosen:
                sys.stdout.write(to_json_line(event.cloudevent()) + "\n")
        else:
            emit([e.cloudevent() for e in chosen], fmt)
        sys.stdout.flush()

    async def go(store: Any) -> None:
        newest = await store.publish([])
        start = max(0, newest - (lines if matcher is None else lines * 50))
        batch = await store.list_events(after_seq=start, limit=100_000)
        if matcher is not None:
            batch = [e for e in batch if matcher.fullmatch(e.type)]
        batch = batch[-lines:] if lines else []
        show(batch, header=True)
        after = newest
        while follow:
            await asyncio.sleep(0.2)
            batch = await store.list_events(after_seq=after, limit=1000)
            if batch:
                after = batch[-1].seq
                show(batch, header=False)

    with_store(ctx, go)


@events_app.command("publish")
def events_publish(
    ctx: typer.Context,
    type_: Annotated[str, typer.Argument(metavar="TYPE", help="The event type, e.g. order.created.")],
    data: Annotated[str, typer.Option("--data", "-d", help="The event's data as a JSON object.")] = "{}",
    subject: Annotated[str | None, typer.Option("--subject", help="What the event is about.")] = None,
    output: OutputOpt = None,
) -> None:
    """Publish one event to the bus (source `progressive/cli`); subscribers (workflow event triggers, alert
    sinks) get it from the daemon."""
    import json
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}", type_):
        raise UsageError(f"TYPE {type_!r}: letters, digits and . _ : - only, e.g. order.created")
    try:
        body = json.loads(data)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--data: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(body, dict):
        raise UsageError("--data: expected a JSON object")
    from progressive_cli.store.base import Event

    event = Event(type_, body, source="progressive/cli", subject=subject)

    async def go(store: Any) -> int:
        return int(await store.publish([event]))

    event.seq = with_store(ctx, go)
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table:
        say(f"published {type_} (seq {event.seq}, id {event.id})", style="ok")
    else:
        emit(event.cloudevent() | {"seq": event.seq}, fmt)


@events_app.command("status")
def events_status(ctx: typer.Context, output: OutputOpt = None) -> None:
    """Each subscription: its position and lag behind the newest event, retry-queue and DLQ depth, and
    events processed, failed, retried, dead-lettered and skipped (not matched)."""
    rows = with_store(ctx, lambda store: store.bus_status())
    emit(rows, state(ctx).fmt(output), columns=[
        ("subscription", "SUBSCRIPTION"), ("offset", "OFFSET"), ("lag", "LAG"), ("retry_queue", "RETRY_QUEUE"),
        ("dead_letters", "DLQ"), ("processed", "PROCESSED"), ("failed", "FAILED"), ("retried", "RETRIED"),
        ("dead_lettered", "DEAD_LETTERED"), ("skipped", "SKIPPED"),
    ])


# --- dlq ----------------------------------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    subscription: Annotated[str | None, typer.Option("--subscription", "-s", help="Only this subscription's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    output: OutputOpt = None,
) -> None:
    """Dead letters, newest first: the event, the subscription that failed it, the error and the attempts."""
    rows = with_store(ctx, lambda store: store.dead_letters(subscription=subscription, limit=limit))
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table:
        rows = [{**r, "id": r["id"][:12], "created_at": iso_time(r["created_at"])} for r in rows]
    emit(rows, fmt, columns=[("id", "ID"), ("created_at", "DEAD_SINCE"), ("subscription", "SUBSCRIPTION"),
                             ("type", "TYPE"), ("attempts", "ATTEMPTS"), ("error", "ERROR")])


def _one(ctx: typer.Context, letter_id: str) -> dict[str, Any]:
    rows = with_store(ctx, lambda store: store.dead_letters(letter_id=letter_id, limit=2))
    if not rows:
        raise NotFoundError(f"no dead letter '{letter_id}' (see: progressive dlq list)")
    if len(rows) > 1:
        raise UsageError(f"'{letter_id}' matches several dead letters; give more of the id")
    return dict(rows[0])


@dlq_app.command("show")
def dlq_show(ctx: typer.Context, letter_id: Annotated[str, typer.Argument(metavar="ID")],
             output: OutputOpt = None) -> None:
    """One dead letter in full: its event's data, the error and the attempts (an id prefix will do)."""
    emit(_one(ctx, letter_id), state(ctx).fmt(output))


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    letter_ids: Annotated[list[str] | None, typer.Argument(metavar="[ID]...")] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    wait: ControlWaitOpt = 10.0,
    output: OutputOpt = None,
) -> None:
    """Put dead letters back on their subscription's retry queue, with a fresh attempt count; the daemon
    delivers them on its next round. Applied by the daemon when one runs (else by this command)."""
    if bool(letter_ids) == replay_all:
        raise UsageError("give dead letter IDs or --all (not both)")
    ids = None if replay_all else [_one(ctx, i)["id"] for i in letter_ids or []]
    row = apply_control(ctx, "dlq.replay", "all" if ids is None else ",".join(ids), {"ids": ids}, wait=wait)
    _counted(ctx, output, "replayed", row["result"]["replayed"])


@dlq_app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    older_than: Annotated[str | None, typer.Option("--older-than", metavar="DURATION",
                                                   help="Only dead letters older than this, e.g. 7d.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    wait: ControlWaitOpt = 10.0,
    output: OutputOpt = None,
) -> None:
    """Delete dead letters for good (all of them, or those older than --older-than); asks first on a
    terminal unless --yes. Applied by the daemon when one runs (else by this command)."""
    from progressive_cli.cli.output import is_tty
    from progressive_cli.config.common import parse_duration

    before = None
    if older_than is not None:
        try:
            before = time.time() - parse_duration(older_than)
        except ValueError as exc:
            raise UsageError(f"--older-than {older_than!r}: {exc}") from None
    if not yes:
        if not is_tty(sys.stdin):
            raise UsageError("purge deletes dead letters for good; pass --yes to confirm")
        what = "every dead letter" if before is None else f"dead letters older than {older_than}"
        if not typer.confirm(f"Delete {what}?", err=True):
            raise typer.Exit(int(ExitCode.OK))
    target = "all" if before is None else f"older-than:{older_than}"
    row = apply_control(ctx, "dlq.purge", target, {"before": before}, wait=wait)
    _counted(ctx, output, "purged", row["result"]["purged"])


def _counted(ctx: typer.Context, output: OutputFormat | None, what: str, count: int) -> None:
    fmt = state(ctx).fmt(output)
    if fmt is OutputFormat.table:
        say(f"{what} {count} dead letter(s)", style="ok")
    else:
        emit({what: count}, fmt)
