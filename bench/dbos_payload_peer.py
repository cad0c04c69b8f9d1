"""Peer for bench/payload_bench.py: DBOS 3.4 running the payload sweep's workloads.

The same shapes as ours, each step returning ``{"text": <size characters of draft-like
text>}``: the 5-step diamond (a -> (b, c) -> d -> e) and a fan-in of ten (root -> ten
drafts run concurrently -> merge).  A workflow per task; N workflows started at once
(DBOS.start_workflow_async, as bench/dbos_peer.py does); steps/s = steps / wall time.
System database: a SQLite temp file or the local PostgreSQL (scratch database
``dbos_payload``, dropped before and after).

Run: python bench/dbos_payload_peer.py --backend sqlite|postgres --shape diamond|fanin --size BYTES --tasks N
The last line printed is a JSON object: {"steps_per_s": ..., "elapsed_s": ..., ...}.
"""
import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dbos import DBOS, DBOSConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.payload_text import draft  # noqa: E402

PG = dict(host="127.0.0.1", port=5432, user="postgres")
PG_DB = "dbos_payload"
SIZE = 0
FANIN = 10


@DBOS.step()
async def make(i: int, n: int) -> dict:
    return {"text": draft(SIZE, i * 31 + n)}


@DBOS.step()
async def join(i: int, parts: list) -> dict:
    return {"text": draft(SIZE, i * 31 + 99), "from": len(parts)}


@DBOS.workflow()
async def diamond(i: int) -> dict:
    a = await make(i, 0)
    b, c = await asyncio.gather(make(i, 1), make(i, 2))
    await join(i, [a, b, c])
    return await make(i, 4)


@DBOS.workflow()
async def fanin(i: int) -> dict:
    await make(i, 0)
    drafts = await asyncio.gather(*(make(i, n) for n in range(1, FANIN + 1)))
    return await join(i, list(drafts))


STEPS = {"diamond": 5, "fanin": FANIN + 2}


def _pg_admin(sql):
    import psycopg
    with psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=10, **PG) as conn:
        conn.execute(sql)


def setup(backend):
    if backend == "sqlite":
        tmp = tempfile.mkdtemp(prefix="dbos_payload_")
        return f"sqlite:///{os.path.join(tmp, 'sys.sqlite')}", lambda: shutil.rmtree(tmp, ignore_errors=True)
    _pg_admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {PG_DB}")
    return (f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{PG_DB}",
            lambda: _pg_admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)"))


async def bench(shape, tasks):
    workflow = diamond if shape == "diamond" else fanin
    for i in range(3):  # warm-up
        await (await DBOS.start_workflow_async(workflow, -1 - i)).get_result()
    t0 = time.perf_counter()
    handles = await asyncio.gather(*(DBOS.start_workflow_async(workflow, i) for i in range(tasks)))
    await asyncio.gather(*(h.get_result(polling_interval_sec=0.01) for h in handles))
    elapsed = time.perf_counter() - t0
    return {"steps_per_s": STEPS[shape] * tasks / elapsed, "elapsed_s": elapsed}


def main():
    global SIZE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--shape", choices=tuple(STEPS), default="diamond")
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--tasks", type=int, default=100)
    args = ap.parse_args()
    SIZE = args.size
    url, cleanup = setup(args.backend)
    config: DBOSConfig = {"name": "dbos-payload", "system_database_url": url, "log_level": "WARNING"}
    try:
        DBOS(config=config)
        DBOS.launch()
        r = asyncio.run(bench(args.shape, args.tasks))
    finally:
        DBOS.destroy(destroy_registry=True)
        logging.shutdown()
        cleanup()
    print(json.dumps(dict(r, system="dbos", backend=args.backend, shape=args.shape, size=args.size,
                          tasks=args.tasks)))


if __name__ == "__main__":
    main()
