"""Peer benchmark: DBOS (PyPI `dbos`, 3.4.0) running our engine benchmark's workload.

The workload is the 5-step diamond DAG of bench/engine_bench.py with no-op steps:

    a -> (b, c) -> d -> e

Each step is a `@DBOS.step()` (async) returning a small dict; b and c both receive
a's output and run concurrently, d receives b's and c's, e receives d's. The DAG is
one async `@DBOS.workflow()`; b and c run concurrently through `asyncio.gather` of
the two async step calls. That is safe for DBOS recovery: a step's function id is
assigned when the step function is *called* (DBOSContext.snapshot_step_ctx, a plain
synchronous call in dbos/_core.py decorate_step), not when its coroutine first runs,
so a then b then c then d then e get ids 1..5 deterministically.

Submission (default --mode start): all N workflows are started at once with
`DBOS.start_workflow_async` on the benchmark's event loop, and their handles'
`get_result()` are awaited with `asyncio.gather`. This is the fastest idiomatic way
in DBOS 3.4: each workflow runs as an asyncio task straight away in this process,
whereas a queue (--mode queue, `DBOS.register_queue` + `enqueue_workflow_async`)
adds a poll of the queue table by a worker thread (polling_interval_sec, 1 s by
default; set to 10 ms here) before each batch of workflows is dequeued and started.

Measured, in one fresh process, after a warm-up of a few workflows:
* light run: 20 workflows one at a time; "step overhead" = median workflow wall time
  (start_workflow_async .. get_result) / 5 steps, in ms. Also reported: the median
  step duration DBOS itself records (operation_outputs started/completed_at_epoch_ms,
  millisecond resolution, read with DBOS.list_workflow_steps_async).
* load run: N workflows at once; steps/s = 5 * N / wall time until all results are in.

System database: SQLite in a temp file (system_database_url="sqlite:///...") or the
local PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth), in a scratch database
`dbos_bench` that is dropped first if it exists (and dropped again at the end).

Run:   python bench/dbos_peer.py --backend sqlite|postgres --tasks N [--json]
Needs: pip install -r bench/requirements.txt (dbos pulls in psycopg[binary] and
       SQLAlchemy itself).
With --json the last line printed is one JSON object:
  {"system": "dbos", "backend": ..., "tasks": N, "steps_per_s": ..., "overhead_ms_light": ...,
   "elapsed_s": ..., plus a few extra informational keys}
"""
import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from importlib.metadata import version as pkg_version

from dbos import DBOS, DBOSConfig

STEPS_PER_WORKFLOW = 5
LIGHT_RUNS = 20
WARMUP = 5
PG_HOST, PG_PORT, PG_USER, PG_DB = "127.0.0.1", 5432, "postgres", "dbos_bench"
QUEUE_NAME = "bench_diamond"


# --- the workload ------------------------------------------------------------

@DBOS.step()
async def step_a(i: int) -> dict:
    return {"step": "a", "i": i}


@DBOS.step()
async def step_b(a: dict) -> dict:
    return {"step": "b", "i": a["i"]}


@DBOS.step()
async def step_c(a: dict) -> dict:
    return {"step": "c", "i": a["i"]}


@DBOS.step()
async def step_d(b: dict, c: dict) -> dict:
    return {"step": "d", "i": b["i"], "from": [b["step"], c["step"]]}


@DBOS.step()
async def step_e(d: dict) -> dict:
    return {"step": "e", "i": d["i"]}


@DBOS.workflow()
async def diamond(i: int) -> dict:
    a = await step_a(i)
    b, c = await asyncio.gather(step_b(a), step_c(a))  # b and c concurrently
    d = await step_d(b, c)
    return await step_e(d)


# --- scratch database ----------------------------------------------------------

def _pg_admin(sql: str) -> None:
    import psycopg  # installed with dbos (psycopg[binary])

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
                         autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)


def setup_backend(backend: str):
    """Return (system_database_url, cleanup callable)."""
    if backend == "sqlite":
        tmpdir = tempfile.mkdtemp(prefix="dbos_bench_")
        path = os.path.join(tmpdir, "dbos_sys.sqlite")
        return f"sqlite:///{path}", lambda: shutil.rmtree(tmpdir, ignore_errors=True)
    if backend == "postgres":
        _pg_admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        _pg_admin(f"CREATE DATABASE {PG_DB}")

        def cleanup():
            try:
                _pg_admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
            except Exception as e:  # best effort; the next run drops it anyway
                print(f"warning: could not drop {PG_DB}: {e}", file=sys.stderr)

        return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DB}", cleanup
    raise ValueError(backend)


# --- measurement -------------------------------------------------------------------

async def start(mode: str, i: int):
    if mode == "queue":
        return await DBOS.enqueue_workflow_async(QUEUE_NAME, diamond, i)
    return await DBOS.start_workflow_async(diamond, i)


async def result(handle):
    # A start_workflow_async handle awaits the workflow's asyncio task directly (the
    # interval is unused); a queue handle polls the system database for the result,
    # every 1 s by default, so poll every 10 ms like the queue itself.
    return await handle.get_result(polling_interval_sec=0.01)


async def run_one(mode: str, i: int) -> float:
    t0 = time.perf_counter()
    handle = await start(mode, i)
    result_ = await result(handle)
    elapsed = time.perf_counter() - t0
    assert result_ == {"step": "e", "i": i}, result_
    return elapsed


async def recorded_step_ms(workflow_ids) -> list:
    """Step durations (ms) as DBOS recorded them in operation_outputs."""
    out = []
    for wid in workflow_ids:
        for s in await DBOS.list_workflow_steps_async(wid, load_output=False):
            if s["started_at_epoch_ms"] is not None and s["completed_at_epoch_ms"] is not None:
                out.append(s["completed_at_epoch_ms"] - s["started_at_epoch_ms"])
    return out


async def bench(tasks: int, mode: str) -> dict:
    # warm-up
    for i in range(WARMUP):
        await run_one(mode, -1 - i)

    # light run: one workflow at a time
    light_ids, light_times = [], []
    for i in range(LIGHT_RUNS):
        t0 = time.perf_counter()
        handle = await start(mode, 10_000_000 + i)
        await result(handle)
        light_times.append(time.perf_counter() - t0)
        light_ids.append(handle.get_workflow_id())
    light_steps = await recorded_step_ms(light_ids)

    # load run: N workflows submitted at once
    t0 = time.perf_counter()
    handles = await asyncio.gather(*(start(mode, i) for i in range(tasks)))
    results = await asyncio.gather(*(result(h) for h in handles))
    elapsed = time.perf_counter() - t0
    for i, r in enumerate(results):
        assert r == {"step": "e", "i": i}, r
    load_steps = await recorded_step_ms([h.get_workflow_id() for h in handles])

    return {
        "steps_per_s": STEPS_PER_WORKFLOW * tasks / elapsed,
        "elapsed_s": elapsed,
        "overhead_ms_light": statistics.median(light_times) / STEPS_PER_WORKFLOW * 1000,
        "workflow_ms_light": statistics.median(light_times) * 1000,
        "step_recorded_ms_light": statistics.median(light_steps),
        "step_recorded_ms_load": statistics.median(load_steps),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--mode", choices=("start", "queue"), default="start",
                    help="start: DBOS.start_workflow_async (default, fastest); "
                         "queue: a DBOS queue with worker_concurrency=tasks, 10 ms polling")
    ap.add_argument("--json", action="store_true", help="print a JSON object on the last line")
    args = ap.parse_args()

    url, cleanup = setup_backend(args.backend)
    config: DBOSConfig = {
        "name": "dbos-bench",
        "system_database_url": url,
        "log_level": "WARNING",  # DBOS logs every launch/shutdown detail at INFO
    }
    try:
        DBOS(config=config)
        DBOS.launch()
        if args.mode == "queue":
            DBOS.register_queue(QUEUE_NAME, worker_concurrency=max(args.tasks, 1),
                                polling_interval_sec=0.01)
        r = asyncio.run(bench(args.tasks, args.mode))
    finally:
        DBOS.destroy(destroy_registry=True)
        logging.shutdown()
        cleanup()

    print(f"dbos {pkg_version('dbos')} [{args.backend}, {args.mode}]: {args.tasks} diamond workflows"
          f" ({STEPS_PER_WORKFLOW * args.tasks} steps) in {r['elapsed_s']:.2f} s ->"
          f" {r['steps_per_s']:.0f} steps/s; light: {r['overhead_ms_light']:.2f} ms/step"
          f" ({r['workflow_ms_light']:.1f} ms/workflow), recorded step duration median"
          f" {r['step_recorded_ms_light']:.1f} ms light / {r['step_recorded_ms_load']:.1f} ms load")
    if args.json:
        print(json.dumps({
            "system": "dbos",
            "backend": args.backend,
            "tasks": args.tasks,
            "steps_per_s": round(r["steps_per_s"], 1),
            "overhead_ms_light": round(r["overhead_ms_light"], 3),
            "elapsed_s": round(r["elapsed_s"], 3),
            "version": pkg_version("dbos"),
            "mode": args.mode,
            "workflow_ms_light": round(r["workflow_ms_light"], 3),
            "step_recorded_ms_light": r["step_recorded_ms_light"],
            "step_recorded_ms_load": r["step_recorded_ms_load"],
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
