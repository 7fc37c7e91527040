"""The types of a PostgreSQL handle, named once (asyncpg's own classes, for the signatures of the adapters).

:data:`Connection` is one session: what a transaction, an advisory lock or a sequence of statements that must see
each other needs — a connection of its own, or one acquired from a pool. :data:`ConnectionOrPool` also takes a
pool, for code that runs single statements only: the pool then lends a connection to each statement.
"""

from __future__ import annotations

from typing import TypeAlias

import asyncpg

Connection: TypeAlias = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
ConnectionOrPool: TypeAlias = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool
