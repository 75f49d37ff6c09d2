"""PostgreSQL integrations: psycopg 3 (async) through a psycopg_pool connection pool.

Operations (``params`` as rendered by a workflow step or the CLI):

- ``query`` ``{sql, params?}`` -> a list of rows, each a dict of column -> JSON value;
- ``execute`` ``{sql, params?}`` -> ``{"rowcount": n}``, plus ``"rows"`` when the statement returns
  rows (``INSERT ... RETURNING``);
- ``transaction`` ``{statements: [{sql, params?}, ...]}`` -> one result per statement (its rows if
  it returns rows, else ``{"rowcount": n}``), all in one transaction that is rolled back entirely
  when any statement fails.

``params`` is a list (``%s`` placeholders) or a mapping (``%(name)s``); a mapping value is sent as
``jsonb``. Values only ever travel as bind parameters of the extended query protocol, and every
``sql`` is one statement: the statements run in pipeline mode, where libpq always uses the extended
protocol, so ``"SELECT 1; DROP TABLE t"`` is refused by the server instead of run as a script.

``read_only=True`` runs every statement in a ``READ ONLY`` transaction whose snapshot is taken
before the statement runs, so neither a write nor ``SET TRANSACTION READ WRITE`` (nor a ``COMMIT``
followed by either) gets through. Connections go back to the pool with ``DISCARD ALL``: no session
state (``SET``, temporary tables, advisory locks) leaks from one operation into the next.

The pool opens on first use in the running event loop and should be closed (``close()``) in it. If it
is not, a guard task closes it when ``asyncio.run()`` cancels the loop's remaining tasks: psycopg_pool's
workers swallow a cancellation that arrives during a connection attempt or reset, and without the
guard ``asyncio.run()`` would wait for them forever. A connector used again in another loop opens a
new pool there.

When a connection cannot be had (server down, refused, timed out) the pool is closed and the next
call opens a new one, so a server that comes back is used at once; the pool also checks a connection
before handing it out, so one broken by a restart between two calls is replaced, not failed on. The
dsn (and its password) never appears in an error message or repr of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import select
import time
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeAlias

import psycopg
from psycopg import AsyncConnection
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from progressive_cli.errors import StepError, one_line
from progressive_cli.integrations.base import Connector, Embed, bad_params, jsonable, require, unknown_params

Conn: TypeAlias = AsyncConnection[DictRow]
Statement: TypeAlias = tuple[str, Sequence[Any] | Mapping[str, Any] | None]

# psycopg_pool logs failed connection attempts as warnings; without a handler of its own, Python's
# last-resort handler would print them on the CLI's stderr next to our one-line error. Applications that
# configure logging still get them (records propagate to the root logger).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

_TIMEOUT_STATES = frozenset({"57014", "25P04"})  # query_canceled (statement_timeout), transaction_timeout
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03"})  # admin/crash shutdown, cannot connect now (+ class 08)


class _Pool(AsyncConnectionPool[Conn]):
    """A pool that remembers why its last connection attempt failed, for the error message (a pool
    timeout alone does not say). If psycopg_pool renames ``_connect`` the message just gets vaguer."""

    last_error: BaseException | None = None
    guard: asyncio.Task[None] | None = None

    async def _connect(self, timeout: float | None = None) -> Conn:
        try:
            conn = await super()._connect(timeout)
        except Exception as exc:
            self.last_error = exc
            raise
        self.last_error = None
        return conn


async def _close_on_cancel(pool: _Pool) -> None:
    """Waits forever; when cancelled (our close(), or asyncio.run() ending the loop) closes *pool*."""
    try:
        await asyncio.Event().wait()
    finally:
        await pool.close(timeout=1.0)


IDLE_CHECK = 2.0
"""A pooled connection idle longer than this is pinged before it is handed out (a server restart in the
meantime would otherwise fail the next operation); busy connections go out with no extra round trip."""
_last_used: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


async def _usable(conn: Conn) -> bool:
    """Whether a pooled connection can take an operation. It costs a round trip only if the connection
    was idle for a while or has unread input while idle (a server that shuts down says so before it
    closes); busy connections go out as they are. (psycopg_pool's own check and reset hooks cost a
    wake-up of its worker on every checkout, which doubled the time of a query.)"""
    if conn.closed or conn.broken:
        return False
    idle = time.monotonic() - _last_used.get(conn, 0.0)
    if idle <= IDLE_CHECK and not _readable(conn):
        return True
    try:
        await conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _readable(conn: Conn) -> bool:
    try:
        return bool(select.select([conn.pgconn.socket], [], [], 0)[0])
    except (OSError, ValueError, psycopg.Error):
        return True


_ONE_STATEMENT = frozenset({"sql", "params"})


class _NumericLoader(Loader):
    """``numeric`` straight to what :func:`jsonable` would make of the Decimal: an int when integral,
    else a float, None for NaN and infinities. Skips the Decimal (and its conversion) on every value."""

    def load(self, data: Buffer) -> int | float | None:
        text = bytes(data)
        if b"." not in text and b"e" not in text and b"N" not in text and b"I" not in text:
            return int(text)
        number = float(text)
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() and abs(number) < 2**53 else number


async def _configure(conn: Conn) -> None:
    """Run by the pool once for each new connection."""
    conn.adapters.register_loader("numeric", _NumericLoader)


class _Stale(Exception):
    """The pool's connections are dead (the server restarted): open a new pool and try again."""


class PostgresConnector(Connector):
    """One ``type: postgres`` integration."""

    type = "postgres"
    operations = ("query", "execute", "transaction")
    writes = frozenset({"execute", "transaction"})

    def __init__(self, config: Any, *, embed: Embed | None = None) -> None:
        super().__init__(config, embed=embed)
        self._pool: _Pool | None = None
        self._hot: Conn | None = None
        self._hot_pool: _Pool | None = None
        self._hot_busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        dsn = str(config.dsn)
        self._secrets = [dsn]
        self._bad_dsn = False
        try:
            password = conninfo_to_dict(dsn).get("password")
        except psycopg.Error:  # reported on first use, without libpq's message (it may quote the dsn)
            self._bad_dsn = True
        else:
            if password:
                self._secrets.append(str(password))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.name!r})"

    # --- operations ---------------------------------------------------------------------------------
    async def run(self, operation: str, params: Mapping[str, Any], *, read_only: bool = False) -> Any:
        statements = self._statements(operation, params)
        for fresh in (False, True):
            pool = await self._get_pool(operation)
            try:
                hot = self._take_hot(pool)
                if hot is not None:
                    try:
                        results = await self._perform(hot, operation, statements, read_only)
                    finally:
                        self._hot_busy = False
                        if hot.broken or hot.closed:
                            await self._release_hot(pool)
                else:
                    async with self._connection(pool) as conn:
                        results = await self._perform(conn, operation, statements, read_only)
                break
            except _Stale:
                await self._drop(pool)  # nothing was sent: the operation runs on a new pool
                if fresh:
                    raise StepError("NETWORK_ERROR", f"postgres '{self.name}': connection lost",
                                    {"integration": self.name, "operation": operation}) from None
            except psycopg.Error as exc:
                raise await self._error(exc, pool, operation, read_only) from None
        if operation == "query":
            rows = results[0][0]
            return rows if rows is not None else []
        if operation == "execute":
            rows, rowcount = results[0]
            return {"rowcount": rowcount} if rows is None else {"rowcount": rowcount, "rows": rows}
        return [{"rowcount": rowcount} if rows is None else rows for rows, rowcount in results]

    async def ping(self) -> str:
        """``SELECT 1``; returns e.g. ``PostgreSQL 18.6``."""
        pool = await self._get_pool("ping")
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                version = conn.info.parameter_status("server_version") or ""
        except psycopg.Error as exc:
            raise await self._error(exc, pool, "ping", True) from None
        return f"PostgreSQL {version}".strip()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is _running_loop():
            await self._release_hot(pool)
            await _close(pool)

    # --- connections --------------------------------------------------------------------------------
    async def _perform(self, conn: Conn, operation: str, statements: list[Statement],
                       read_only: bool) -> list[tuple[list[Any] | None, int]]:
        if not await _usable(conn):
            raise _Stale
        try:
            if read_only:
                return await self._read_only(conn, statements)
            if len(statements) > 1 or operation == "transaction":
                async with conn.transaction():
                    return [await self._execute(conn, sql, args) for sql, args in statements]
            return [await self._execute(conn, *statements[0])]  # autocommit: one round trip
        finally:
            _last_used[conn] = time.monotonic()

    def _take_hot(self, pool: _Pool) -> Conn | None:
        """The leased ("hot") connection if it is free. One connection stays leased from the pool and
        serves any operation while it is free, without a pool checkout; concurrent operations get theirs
        from the pool. Steps mostly run one after another, and a psycopg_pool checkout and return cost
        about as much as a short query's own client-side work."""
        hot = self._hot
        if hot is not None and not self._hot_busy and self._hot_pool is pool and not hot.broken:
            self._hot_busy = True
            return hot
        return None

    @contextlib.asynccontextmanager
    async def _connection(self, pool: _Pool) -> AsyncIterator[Conn]:
        """A pooled connection for one operation; the first one taken becomes the hot one."""
        if self._hot is None and self._hot_pool is None:
            self._hot_pool = pool  # claimed before the await: a concurrent first call uses the pool
            try:
                conn = await pool.getconn()
            except BaseException:
                self._hot_pool = None
                raise
            self._hot, self._hot_busy = conn, True
            try:
                yield conn
            finally:
                self._hot_busy = False
                if conn.broken or conn.closed:
                    await self._release_hot(pool)
            return
        async with pool.connection() as conn:
            yield conn

    async def _release_hot(self, pool: _Pool) -> None:
        hot, self._hot, self._hot_pool, self._hot_busy = self._hot, None, None, False
        if hot is not None:
            with contextlib.suppress(Exception):
                await pool.putconn(hot)

    # --- parameters ---------------------------------------------------------------------------------
    def _statements(self, operation: str, params: Mapping[str, Any]) -> list[Statement]:
        if operation != "transaction" and type(params) is dict and params.keys() <= _ONE_STATEMENT:
            sql, args = params.get("sql"), params.get("params")  # the common, well-formed case, cheaply
            if type(sql) is str and sql.strip() and (args is None or type(args) in (list, tuple, dict)) \
                    and operation in self.operations:
                return [(sql, _bind(args))]
        name = self.name
        if operation not in self.operations:
            raise bad_params(name, operation, f"unknown operation; expected one of {', '.join(self.operations)}")
        if not isinstance(params, Mapping):
            raise bad_params(name, operation, f"parameters must be a mapping, got {type(params).__name__}")
        if operation != "transaction":
            return [self._statement(params, operation, "")]
        unknown_params(params, {"statements"}, name, operation)
        items = require(params, "statements", list, name, operation)
        if not items:
            raise bad_params(name, operation, "'statements' must list at least one statement")
        return [self._statement(item, operation, f"statements[{i}]: ") for i, item in enumerate(items)]

    def _statement(self, params: Any, operation: str, where: str) -> Statement:
        name = self.name
        if not isinstance(params, Mapping):
            raise bad_params(name, operation, f"{where}a statement must be a mapping with 'sql' and 'params', "
                                              f"got {type(params).__name__}")
        try:
            unknown_params(params, {"sql", "params"}, name, operation)
            sql = require(params, "sql", str, name, operation)
            args = params.get("params")
            if args is not None:
                args = require(params, "params", (list, tuple, dict), name, operation)
        except StepError as exc:
            if not where:
                raise
            raise bad_params(name, operation, where + exc.message.removeprefix(f"{name}.{operation}: ")) from None
        if not sql.strip():
            raise bad_params(name, operation, f"{where}parameter 'sql' must not be empty")
        return sql, _bind(args)

    # --- execution ----------------------------------------------------------------------------------
    @staticmethod
    async def _execute(conn: Conn, sql: str, args: Sequence[Any] | Mapping[str, Any] | None
                       ) -> tuple[list[Any] | None, int]:
        """One statement: its rows (None if it returns none) and rowcount."""
        cursor = conn.cursor()
        # prepare=True: the extended query protocol, so one `sql` is one statement (never a script), and
        # the statement is parsed once per connection
        await cursor.execute(sql, args, prepare=True)
        rows = jsonable(await cursor.fetchall()) if cursor.description is not None else None
        return rows, cursor.rowcount

    async def _read_only(self, conn: Conn, statements: list[Statement]) -> list[tuple[list[Any] | None, int]]:
        """Statements in READ ONLY transactions, rolled back at the end. The connection leaves autocommit
        for the duration, so psycopg opens a new ``BEGIN READ ONLY`` transaction before any statement
        that follows a ``COMMIT`` inside the SQL; it goes back to the pool as it came."""
        await conn.set_autocommit(False)
        await conn.set_read_only(True)
        try:
            return [await self._execute_read_only(conn, sql, args) for sql, args in statements]
        finally:
            await conn.rollback()
            await conn.set_read_only(None)
            await conn.set_autocommit(True)

    @staticmethod
    async def _execute_read_only(conn: Conn, sql: str, args: Sequence[Any] | Mapping[str, Any] | None
                                 ) -> tuple[list[Any] | None, int]:
        """One statement of a READ ONLY transaction. ``SELECT 1`` first takes the transaction's snapshot,
        after which it cannot be made READ WRITE; pipeline mode makes libpq use the extended query
        protocol even without parameters, which runs exactly one statement (so no ``COMMIT; DELETE``)."""
        async with conn.pipeline() as pipeline:
            await conn.execute("SELECT 1")
            cursor = conn.cursor()
            await cursor.execute(sql, args)
            await pipeline.sync()
            rows = jsonable(await cursor.fetchall()) if cursor.description is not None else None
        return rows, cursor.rowcount

    async def _get_pool(self, operation: str) -> _Pool:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._loop is not loop or self._lock is None:
            # A pool belongs to the loop it was opened in; one left by a finished asyncio.run() is dropped.
            self._pool, self._loop, self._lock = None, loop, asyncio.Lock()
            self._hot, self._hot_pool, self._hot_busy = None, None, False
        async with self._lock:
            if self._pool is not None:
                return self._pool
            if self._bad_dsn:
                raise StepError("NETWORK_ERROR", f"postgres '{self.name}': cannot connect: the dsn is not a valid "
                                                 "libpq connection string or URL (not shown: it may hold a password)",
                                {"integration": self.name, "operation": operation})
            timeout = float(self.config.connect_timeout)
            min_size = int(self.config.pool.min_size)
            pool = _Pool(
                str(self.config.dsn), open=False, name=f"progressive-{self.name}",
                min_size=min_size, max_size=max(int(self.config.pool.max_size), min_size, 1),
                kwargs={"row_factory": dict_row, "autocommit": True, "connect_timeout": max(2, math.ceil(timeout))},
                configure=_configure, timeout=timeout,
            )
            try:
                await pool.open(wait=True, timeout=timeout)
            except psycopg.Error as exc:
                await pool.close()
                raise await self._error(exc, pool, operation, False) from None
            except BaseException:  # cancelled (Ctrl-C, a step timeout): its workers must not outlive us
                await asyncio.shield(pool.close(timeout=1.0))
                raise
            pool.guard = loop.create_task(_close_on_cancel(pool), name=f"progressive-{self.name}-pool-guard")
            self._pool = pool
            return pool

    async def _drop(self, pool: _Pool) -> None:
        """Close *pool* after a connection failure; the next call opens a new one."""
        if self._pool is pool:
            self._pool = None
        if self._hot_pool is pool:
            await self._release_hot(pool)
        await _close(pool, timeout=1.0)

    # --- errors -------------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return one_line(text.strip())

    async def _error(self, exc: psycopg.Error, pool: _Pool, operation: str, read_only: bool) -> StepError:
        details: dict[str, object] = {"integration": self.name, "operation": operation}
        prefix = f"postgres '{self.name}'"
        sqlstate = exc.sqlstate
        if isinstance(exc, PoolTimeout | PoolClosed):
            cause = pool.last_error
            reason = "; ".join(line.strip() for line in str(cause).splitlines() if line.strip()) if cause else ""
            if cause is not None or pool.closed:
                await self._drop(pool)  # a busy but healthy pool (no failed attempt) is kept
            if not reason:
                reason = f"no connection within {float(self.config.connect_timeout):g} s"
            return StepError("NETWORK_ERROR", self._scrub(f"{prefix}: cannot connect: {reason}"), details)
        if sqlstate in _TIMEOUT_STATES:
            details["sqlstate"] = sqlstate
            return StepError("TIMEOUT", self._scrub(f"{prefix}: {_primary(exc)}"), details)
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
                sqlstate is None or sqlstate.startswith("08") or sqlstate in _CONNECTION_STATES):
            if sqlstate:
                details["sqlstate"] = sqlstate
            await self._drop(pool)
            return StepError("NETWORK_ERROR", self._scrub(f"{prefix}: connection lost: {_primary(exc)}"), details)
        if sqlstate is None and isinstance(exc, psycopg.ProgrammingError | psycopg.DataError):
            # Raised by psycopg before anything was sent: placeholders vs params, a value it cannot adapt.
            return bad_params(self.name, operation, self._scrub(_primary(exc)))
        details["sqlstate"] = sqlstate
        for key in ("detail", "hint"):
            value = getattr(exc.diag, f"message_{key}", None)
            if value:
                details[key] = self._scrub(value)
        message = _primary(exc)
        if sqlstate == "25006" and read_only:
            message += " (the operation was read-only; pass --write to allow writes)"
        elif sqlstate == "42601" and "multiple commands" in message:
            message += " (one statement per 'sql'; use the transaction operation for several)"
        return StepError("DATABASE_ERROR", self._scrub(f"{prefix}: {message}"), details)


async def _close(pool: _Pool, timeout: float = 5.0) -> None:
    await pool.close(timeout=timeout)
    if pool.guard is not None:
        pool.guard.cancel()


def _primary(exc: psycopg.Error) -> str:
    text = exc.diag.message_primary or str(exc)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


def _bind(args: Sequence[Any] | Mapping[str, Any] | None) -> Sequence[Any] | Mapping[str, Any] | None:
    """Bind parameters as psycopg takes them; a mapping value (a JSON object) goes as jsonb."""
    if args is None:
        return None
    if isinstance(args, Mapping):
        return {str(k): Jsonb(v) if isinstance(v, Mapping) else v for k, v in args.items()}
    return [Jsonb(v) if isinstance(v, Mapping) else v for v in args]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


__all__ = ["PostgresConnector"]
