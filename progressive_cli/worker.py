"""The worker: runs queued workflow runs from the state store's work queue.

``progressive run workflow --mode detach|hybrid`` records a run as ``queued``, puts a ``run`` item on
the queue and makes sure a worker is alive; ``progressive worker`` is that worker, and the daemon (a
later issue) runs the same :class:`Worker` loop. No Typer or Rich here: the CLI is a thin shell.

Safety, in layers:

- ``claim_work_batch`` hands items to one worker at a time (as many as it has free slots, in one
  transaction), each under a lease the worker renews while the run goes on. A worker that dies leaves
  its items leased: another worker takes them back at once when the dead worker was on this host (its
  pid is gone), else when the lease lapses.
- The engine's execution lease is the last word: two processes never drive one execution, whatever
  the queue says. A worker that finds the run owned by a live process gives the item back for later.
- An item is deleted only once its execution has finished: in the very transaction that records the
  run's final status (``Engine.run(queue_item=)``), so a run is never dropped half-way and a finished
  run never keeps its item.

Throughput: while it serves, the worker turns on the store's group commit: the runs in flight (up to
``concurrency``) write their steps and statuses into shared transactions, one per turn of the event
loop, rather than one commit per write. Each write still returns only once it is committed, so a step's
result is in the store before the run's next step starts, as with a run of its own. Because a start
waits for that shared commit, the worker counts the runs it is starting itself against a workflow's
``concurrency``, not only what the store shows.

Liveness: a worker holds an exclusive ``flock`` on ``worker.lock`` next to the SQLite file for as long
as it works the queue. A caller that queues a run checks that lock *after* enqueueing and starts a
worker when it is free; a draining worker releases the lock *before* its last look at the queue.
So a run queued while a worker is on its way out is either seen by that worker or finds the lock
free and starts another: never stranded. Two callers at once may start two workers; the second
cannot take the lock and exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from progressive_cli.engine.executor import _owner_is_dead
from progressive_cli.errors import NotFoundError, UnavailableError
from progressive_cli.store.base import FINISHED, Event, Execution, WorkItem, now
from progressive_cli.util import LEVELS, Periodic, log_line

RUN = "run"
"""The kind of the queue items this worker runs: ``{"execution": ID}``."""
LEASE_SECONDS = 60.0
"""How long a claimed item stays with its worker without a renewal (renewed every third of it)."""
RETRY_DELAY = 2.0
"""An item whose run is busy elsewhere, or over its workflow's concurrency, is looked at again after this."""
MAX_ERRORS = 3
"""Claims of an item whose run keeps raising (a bug, not a failed workflow) before the run is failed."""
DRAIN_HORIZON = 60.0
"""A draining worker waits for items held back (by the delays above) that are due within this long."""
LOG_LIMIT = 10 * 1024 * 1024
"""A worker log larger than this is moved to ``worker.log.1`` when the next worker starts."""


def worker_paths(store: Any, root: Path) -> tuple[Path, Path]:
    """The lock and log files of the workers of ``store``: next to its SQLite file (``worker.lock`` and
    ``worker.log`` beside ``state.db``, ``NAME.worker.lock`` beside another ``NAME.db``), else in
    ``ROOT/.progressive``."""
    db = getattr(store, "path", None)
    if db is None:
        return root / ".progressive" / "worker.lock", root / ".progressive" / "worker.log"
    db = Path(db)
    prefix = "" if db.stem == "state" else f"{db.stem}."
    return db.parent / f"{prefix}worker.lock", db.parent / f"{prefix}worker.log"


class WorkerLock:
    """An exclusive ``flock`` on the worker lock file, held while a worker works the queue; the kernel
    drops it when the process dies, however it dies. The holder's pid is written in the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UnavailableError(f"worker lock {self.path}: {exc.strerror or exc}") from None

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock, trying for up to ``wait`` seconds (a caller checking the lock holds it for a moment)."""
        if self._fd is not None:
            return True
        fd = self._open()
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def taken(self) -> bool:
        """Whether another process holds the lock (checked by taking it for a moment)."""
        if self._fd is not None:
            return False
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def holder(self) -> int | None:
        """The pid the current holder wrote (meaningful only while the lock is taken)."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


def spawn_worker(root: Path, log: Path, global_args: list[str],
                 command: tuple[str, ...] = ("worker", "--drain")) -> subprocess.Popen[bytes]:
    """Start ``progressive worker --drain`` (or ``command``) for the project at ``root``, detached from this
    process (its own session, so Ctrl-C here does not reach it), output appended to ``log``. A caller that outlives it
    should ``poll()`` it now and then: until reaped, a dead child is a zombie, and a zombie's pid looks
    alive, which would keep its items from the next worker until their leases lapse."""

    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if log.stat().st_size > LOG_LIMIT:
                os.replace(log, log.with_name(log.name + ".1"))
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "progressive_cli", "-p", str(root), *global_args, *command],
                cwd=root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
    except OSError as exc:
        raise UnavailableError(f"cannot start {command[0]} (log {log}): {exc.strerror or exc}") from None
    return proc


def ensure_worker(lock: WorkerLock, root: Path, log: Path,
                  global_args: list[str]) -> tuple[subprocess.Popen[bytes] | None, int | None]:
    """Start a worker unless one holds the lock. Call it *after* the run is on the queue (see the module
    doc). Returns the process started (None if one was alive), and its pid or the running one's."""
    if lock.taken():
        return None, lock.holder()
    proc = spawn_worker(root, log, global_args)
    return proc, proc.pid


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass
class Worker:
    """Claims ``run`` items and drives their executions with ``engine``, ``concurrency`` at a time."""

    store: Any
    engine: Any
    concurrency: int = 4
    poll_interval: float = 1.0
    lease_seconds: float = LEASE_SECONDS
    retry_delay: float = RETRY_DELAY
    write: Callable[[str], None] = _stderr
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    """``host:pid``, as the engine's owners are, so a dead worker on this host is recognised by its pid."""
    log_format: str = "text"
    log_level: str = "info"
    counts: dict[str, int] = field(default_factory=dict)
    """Runs this worker ended, by final status."""
    _active: dict[str, str] = field(default_factory=dict)
    """The executions this worker is handling, with their workflows once known."""

    def log(self, message: str, *, level: str = "info", **fields: Any) -> None:
        """One log line (``logging.format`` text or json; below ``logging.level``, nothing)."""
        if LEVELS[level] >= LEVELS[self.log_level]:
            self.write(log_line(self.log_format, f"worker {self.worker_id}", message, level=level, **fields))

    def on_event(self, event: Event) -> None:
        """The engine's events, one log line each (step starts left out)."""
        if event.type == "step.started":
            return
        data = event.data
        what = data.get("key") or data.get("workflow") or ""
        duration = data.get("duration_ms") if isinstance(data.get("duration_ms"), int | float) else None
        detail = f" {duration:.1f}ms" if duration is not None else ""
        error = data.get("error")
        kind = error.get("kind") if isinstance(error, dict) else None
        if isinstance(error, dict):
            detail += f" {kind}: {error.get('message')}"
        self.log(f"{(event.execution_id or '')[:12]} {event.type} {what}{detail}",
                 level="warning" if kind else "info", event=event.type, execution=event.execution_id,
                 workflow=data.get("workflow"), step=data.get("key"), duration_ms=duration, error=kind)

    # --- the loop ------------------------------------------------------------------------------------
    async def serve(self, *, drain: bool = False, lock: WorkerLock | None = None,
                    stop: asyncio.Event | None = None, grace: float = 0.0) -> None:
        """Work the queue until ``stop`` is set or, with ``drain``, until nothing is left that this worker
        could run. On the way out, runs still going get ``grace`` seconds to finish; then they are stopped
        and their items given back (the next worker resumes them; completed steps are not run again)."""
        stop = stop or asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        running: dict[asyncio.Task[None], WorkItem] = {}
        # the runs in flight share the store's transactions (one commit per turn of the loop, not per write)
        group_commit = getattr(self.store, "group_commit", None)
        grouped = group_commit(True) if group_commit is not None else None
        self.log(f"started (concurrency {self.concurrency}{', draining' if drain else ''}) on {self.store.url}")
        try:
            while not stop.is_set():
                try:
                    if len(running) < self.concurrency:
                        for item in await self._claim(self.concurrency - len(running)):
                            running[asyncio.create_task(self._handle(item))] = item
                    if running:
                        await asyncio.wait([*running, stopping], timeout=self.poll_interval,
                                           return_when=asyncio.FIRST_COMPLETED)
                        for task in [t for t in running if t.done()]:
                            del running[task]
                        continue
                    due = await self._next_due()
                    if not drain or (due is not None and due <= DRAIN_HORIZON):
                        await asyncio.wait([stopping], timeout=min(self.poll_interval, due or self.poll_interval))
                        continue
                    # Nothing left. Let go of the lock first, then look once more: a run queued while we
                    # held it found us alive and started no worker, so it must be seen here.
                    if lock is not None:
                        lock.release()
                    items = await self._claim(self.concurrency)
                    if not items:
                        return
                    if lock is not None:
                        lock.acquire()  # best effort: another worker may have it by now, which is harmless
                    for item in items:
                        running[asyncio.create_task(self._handle(item))] = item
                except UnavailableError as exc:  # the store is busy or gone for a moment: try again
                    self.log(f"store unavailable: {exc}")
                    await asyncio.wait([stopping], timeout=self.poll_interval)
        finally:
            stopping.cancel()
            if running and grace > 0 and stop.is_set():
                self.log(f"waiting up to {grace:g}s for {len(running)} run(s) in flight")
                await asyncio.wait(list(running), timeout=grace)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if group_commit is not None:
                group_commit(bool(grouped))
            summary = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items())) or "no runs"
            self.log(f"stopped: {summary}")

    async def _claim(self, limit: int) -> list[WorkItem]:
        """Up to ``limit`` items, claimed in one round trip; the items of dead workers are taken back
        first when nothing else is there."""
        items: list[WorkItem] = await self.store.claim_work_batch(self.worker_id, self.lease_seconds, limit)
        if not items and await self._release_dead():
            items = await self.store.claim_work_batch(self.worker_id, self.lease_seconds, limit)
        return items

    async def _release_dead(self) -> bool:
        """Give back the items of workers on this host that died holding them (without waiting for the lease)."""
        released = False
        t = now()
        for item in await self.store.list_work():
            holder = item.leased_by
            if holder and holder != self.worker_id and (item.lease_until or 0) >= t and _owner_is_dead(holder) \
                    and await self.store.release_work(item.id, holder):
                self.log(f"took back item {item.id[:12]} from {holder}, which is gone")
                released = True
        return released

    async def _next_due(self) -> float | None:
        """Seconds until the next run item nobody holds is due (0 if one is due now), or None if there is none."""
        t = now()
        due = [item.available_at - t for item in await self.store.list_work()
               if item.kind == RUN and (item.leased_by is None or (item.lease_until or 0) < t)]
        return max(0.0, min(due)) if due else None

    async def _give_back(self, item: WorkItem, delay: float | None = None) -> None:
        delay = self.retry_delay if delay is None else delay
        with contextlib.suppress(UnavailableError):
            await self.store.release_work(item.id, self.worker_id, now() + delay)

    def _keep_lease(self, item: WorkItem) -> Periodic:
        """Renew the item's lease every third of it while its run goes on."""

        async def renew() -> bool:
            with contextlib.suppress(UnavailableError):
                if not await self.store.extend_work(item.id, self.worker_id, self.lease_seconds):
                    self.log(f"lost the lease of item {item.id[:12]}; the run's own lease still guards it")
                    return False
            return True

        return Periodic(self.lease_seconds / 3, renew)

    async def _handle(self, item: WorkItem) -> None:
        execution_id = item.payload.get("execution") if isinstance(item.payload, dict) else None
        if item.kind != RUN or not isinstance(execution_id, str):
            self.log(f"item {item.id[:12]} ({item.kind}) is not a run; left for the daemon")
            await self._give_back(item, self.lease_seconds)
            return
        if execution_id in self._active:  # one execution, two items: never drive it twice in this process
            await self._give_back(item)
            return
        self._active[execution_id] = ""
        keeper = self._keep_lease(item)
        try:
            await self._run(item, execution_id)
        except asyncio.CancelledError:
            await self._give_back(item, 0.0)  # stopped with the worker: the next worker resumes it
            raise
        except Exception as exc:  # a bug or a broken record, not a failed workflow: the worker goes on
            await self._errored(item, execution_id, exc)
        finally:
            keeper.cancel()
            self._active.pop(execution_id, None)

    async def _run(self, item: WorkItem, execution_id: str) -> None:
        execution = await self.store.get_execution(execution_id)
        if execution is None:
            self.log(f"item {item.id[:12]}: no execution {execution_id[:12]}; dropped")
            await self.store.finish_work(item.id)
            return
        if execution.status not in FINISHED:
            limit = (execution.definition or {}).get("concurrency")
            self._active[execution_id] = execution.workflow
            # the runs this worker is starting count before their start is committed: their writes wait
            # for the turn's transaction, so the store alone would not show them yet
            mine = {i for i, w in self._active.items() if w == execution.workflow and i != execution_id}
            if execution.status == "queued" and limit and \
                    await self.engine.in_progress(execution.workflow, also=mine) >= limit:
                self._active[execution_id] = ""  # not starting after all
                await self._give_back(item)  # at its workflow's concurrency limit: later
                return
            self.log(f"{execution_id[:12]} {execution.workflow} ({execution.status}): running it "
                     f"(claim {item.attempts})")
            try:
                # a run that finishes here takes its item with it, in the transaction of its final status
                execution = await self.engine.run(execution_id, queue_item=item.id, execution=execution)
            except UnavailableError as exc:  # another live process drives it; look again later
                self.log(f"{execution_id[:12]}: {exc}; later")
                await self._give_back(item)
                return
            if execution.status in FINISHED:
                self.counts[execution.status] = self.counts.get(execution.status, 0) + 1
                return
        if execution.status in FINISHED:
            await self.store.finish_work(item.id)
        else:  # it stopped short (another process took it over): keep the item until the run has finished
            await self._give_back(item)

    async def _errored(self, item: WorkItem, execution_id: str, exc: Exception) -> None:
        self.log(f"{execution_id[:12]}: {type(exc).__name__}: {exc} (claim {item.attempts} of {MAX_ERRORS})")
        if item.attempts < MAX_ERRORS:
            await self._give_back(item, self.retry_delay * 2 ** item.attempts)
            return
        with contextlib.suppress(UnavailableError):
            execution = await self.store.get_execution(execution_id)
            if execution is not None and execution.status not in FINISHED:
                error = {"kind": "INTERNAL", "message": f"the worker could not run it: {type(exc).__name__}: {exc}"}
                event = Event("workflow.failed", {"workflow": execution.workflow, "status": "failed", "error": error},
                              source=f"progressive/workflows/{execution.workflow}", subject=execution_id,
                              execution_id=execution_id)
                await self.store.update_execution(execution_id, [event], status="failed", error=error,
                                                  finished_at=now(), owner=None, lease_until=None)
                self.counts["failed"] = self.counts.get("failed", 0) + 1
            await self.store.finish_work(item.id)


async def follow(store: Any, execution_id: str, on_event: Callable[[Event], None], *, interval: float = 0.1,
                 nudge: Callable[[Execution, bool], None] | None = None, nudge_every: float = 2.0) -> Execution:
    """Feed ``on_event`` the execution's events from the store as they are written, until it has finished;
    return it. ``nudge(execution, progressed)`` is called every ``nudge_every`` s while it has not
    (``progressed``: whether events came since the last call), e.g. to make sure a worker is alive."""
    after = 0
    progressed = False
    last_nudge = time.monotonic()
    while True:
        batch = await store.list_events(after_seq=after, execution_id=execution_id, limit=500)
        for event in batch:
            on_event(event)
            after = event.seq or after
        progressed = progressed or bool(batch)
        if len(batch) == 500:
            continue
        execution = await store.get_execution(execution_id)
        if execution is None:
            raise NotFoundError(f"no execution '{execution_id}'")
        if execution.status in FINISHED:  # its last events were committed with the status: read them
            for event in await store.list_events(after_seq=after, execution_id=execution_id, limit=100_000):
                on_event(event)
            return execution
        if nudge is not None and time.monotonic() - last_nudge >= nudge_every:
            nudge(execution, progressed)
            progressed, last_nudge = False, time.monotonic()
        await asyncio.sleep(interval)
