"""Storage-layer transaction vs a raw aiomysql pooled transaction, interleaved (A B A B).

Both do the same work: INSERT one task row, SELECT it back, COMMIT.
Goal (bench/README.md): ours within 2x of raw aiomysql.
Run: python bench/storage_bench.py [--rounds 20 --per-round 50]
"""
import argparse
import asyncio
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

import aiomysql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ensure_mysql_database, median, timed  # noqa: E402
from pipeline_service.ids import new_id, now_ms  # noqa: E402
from pipeline_service.store.storage import Storage  # noqa: E402

RAW_INSERT = ("INSERT INTO pipeline_tasks (id, tenant_id, pipeline_id, owner_id, title, params, status, error, "
              "created_at, updated_at, started_at, finished_at) VALUES (%s,%s,%s,%s,%s,%s,%s,NULL,%s,%s,NULL,NULL)")
RAW_SELECT = ("SELECT id, tenant_id, pipeline_id, owner_id, title, status, error, created_at, updated_at, "
              "started_at, finished_at FROM pipeline_tasks WHERE tenant_id = %s AND id = %s")


async def measure(rounds, per_round):
    url = ensure_mysql_database()
    storage = Storage.from_description(url)
    await storage.create_missing_tables()
    parts = urlsplit(url)
    pool = await aiomysql.create_pool(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                                      password=parts.password or "", db=parts.path.lstrip("/"),
                                      autocommit=False, minsize=1, maxsize=5)

    async def ours():
        row = dict(id=new_id(), tenant_id="bench", pipeline_id="p", owner_id="o", title="t",
                   params=json.dumps({"a": 1}), status="pending", now=now_ms(),
                   priority=5, idempotency_key=None, schedule_id=None, scheduled_for=None)
        async with storage.transaction() as tx:
            await tx.execute("insert_task", **row)
            await tx.fetch_all("task_state", tenant_id="bench", task_id=row["id"])

    async def raw():
        tid, now = new_id(), now_ms()
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                try:
                    await cur.execute(RAW_INSERT, (tid, "bench", "p", "o", "t", json.dumps({"a": 1}),
                                                   "pending", now, now))
                    await cur.execute(RAW_SELECT, ("bench", tid))
                    await cur.fetchall()
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise

    results = {"ours": [], "raw": []}
    await timed(ours, 20), await timed(raw, 20)  # warm-up
    for _ in range(rounds):  # interleaved: A B A B, so drift hits both alike
        results["ours"] += await timed(ours, per_round)
        results["raw"] += await timed(raw, per_round)
    pool.close()
    await pool.wait_closed()
    await storage.close()
    return {k: median(v) for k, v in results.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    args = parser.parse_args(argv)
    m = asyncio.run(measure(args.rounds, args.per_round))
    print(f"storage transaction (insert+select+commit), MariaDB, {args.rounds * args.per_round} each, medians:")
    print(f"  raw aiomysql pooled : {m['raw']:.3f} ms")
    print(f"  pipeline_service    : {m['ours']:.3f} ms")
    print(f"  ratio ours/raw      : {m['ours'] / m['raw']:.2f}x   (goal <= 2x)")
    return m


if __name__ == "__main__":
    main()
