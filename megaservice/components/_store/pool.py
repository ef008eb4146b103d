"""The store's connection pool: psycopg_pool's, trying to reconnect every 0.5 s while PostgreSQL is down.

psycopg_pool doubles the delay between attempts to replace a lost connection (1, 2, 4, 8 s ...), so
after an outage the services kept failing for up to as long again once PostgreSQL was back. `Pool`
holds the delay at `RECONNECT_DELAY` (by overriding psycopg_pool's `_add_connection`: the
`pgvector` extra pins psycopg-pool below 3.4, and `tests/components/test_store.py` times the
recovery), and psycopg_pool's warning of each failed attempt is logged at most once per pool every
10 s.
"""

import logging
import time

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

__all__ = ["RECONNECT_DELAY", "Pool"]

RECONNECT_DELAY = 0.5
"""Seconds between the pool's attempts to replace a connection while PostgreSQL cannot be reached.

psycopg_pool doubles the delay after each failed attempt (1, 2, 4, 8, 16 s ...): after an outage of
15 s its next attempt came up to 15 s after PostgreSQL answered again, and every call failed until
then. A failed attempt on a server that is down costs well under a millisecond."""
_WARN_EVERY = 10.0  # seconds between two of psycopg_pool's warnings of a failed attempt, per pool


class _Reconnecting(AttemptWithBackoff):
    """psycopg_pool's reconnection attempt, with the delay held at `RECONNECT_DELAY` (jittered by 10 %)."""

    INITIAL_DELAY = RECONNECT_DELAY
    DELAY_BACKOFF = 1.0


class Pool(AsyncConnectionPool[AsyncConnection[TupleRow]]):
    """psycopg_pool's pool, trying again every `RECONNECT_DELAY` s (not ever more rarely) while the server is down."""

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        # a failed attempt reschedules itself with the same `attempt`: the first one sets the policy
        await super()._add_connection(attempt or _Reconnecting(timeout=self.reconnect_timeout), growing)


class _FewerReconnectWarnings(logging.Filter):
    """psycopg_pool's warning of each failed attempt to connect, at most once per pool every `_WARN_EVERY` s.

    Each connection the pool lost tries again every `RECONNECT_DELAY`: a pool of 10 would log 20 a second.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shown: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "error connecting in %r: %s" or not isinstance(record.args, tuple) or not record.args:
            return True
        pool, now = str(record.args[0]), time.monotonic()
        if now - self._shown.get(pool, -_WARN_EVERY) < _WARN_EVERY:
            return False
        self._shown[pool] = now
        return True


logging.getLogger("psycopg.pool").addFilter(_FewerReconnectWarnings())
