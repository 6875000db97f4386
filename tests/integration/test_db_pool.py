"""The shard pool (tessera.shared.db.pool) sends no reset query on release, and still
hands out clean connections: a transaction left open is rolled back by asyncpg."""

from __future__ import annotations

from tessera.shared.db.pool import create_pool


async def test_a_released_connection_comes_back_clean_without_a_reset_query(database):
    pool = await create_pool(database, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS left_behind (x int)")
            raw = conn._con
            sent_before = raw._protocol.queries_count
        async with pool.acquire() as again:
            assert again._con is raw  # the same connection (max_size 1)
            assert not again.is_in_transaction()
            # rolled back with the transaction it was created in
            assert await again.fetchval("SELECT to_regclass('pg_temp.left_behind')") is None
            # the release sent only the ROLLBACK, not RESET ALL / CLOSE ALL / UNLISTEN *
            assert raw._protocol.queries_count - sent_before <= 2
            assert await again.fetchval("SELECT '{\"a\": 1}'::jsonb") == {"a": 1}
    finally:
        await pool.close()
