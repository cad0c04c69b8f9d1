"""Payload sweep: the engine with outputs of 0, 2, 20 and 200 KB, beside raw aiomysql and DBOS 3.4.

Shapes: the 5-step diamond (a -> (b, c) -> d -> e) and a fan-in of ten (root -> ten
drafts -> merge); every step returns ``{"text": <size characters of draft-like text>}``
(bench/payload_text.py: compresses like prose, ~0.4 with zlib).  On MariaDB and SQLite,
each configuration in a fresh process and a fresh database, all tasks submitted at once.
Figures, medians over interleaved rounds (the machine is shared and noisy):
* steps/s, from the first submit until every task has succeeded;
* stored bytes per task as a ratio to the bytes of its outputs (their JSON): the
  artifacts' content as stored (``content`` + ``packed``), and the artifact table's size
  on disk (MariaDB: data_length after ANALYZE; SQLite: its pages, from dbstat);
* the process's peak RSS; at 20 KB also with twice the tasks (flat: the ratio ≈ 1).
Baselines measured in the same run: raw aiomysql inserting rows of the same size, one
committed transaction each, 64 at once (rows/s); DBOS 3.4 running the same workload
(bench/dbos_payload_peer.py, SQLite and PostgreSQL; skipped with a note if dbos is not
installed).  ``uncompressed``: the diamond at 20 KB with compression off (compress_above=None).

Goals (docs: issue #13), printed beside the figures: at 20 KB, stored ≤ 1.1x the outputs
uncompressed and ≤ 0.5x compressed; steps/s ≥ 0.7x the raw aiomysql row rate of the same
size; ≥ 10x DBOS; peak RSS flat in the number of tasks.

Run: python bench/payload_bench.py [--rounds 3] [--tasks 100] [--quick] [--json FILE] [--readme]
(bench/run.py runs it too; --readme rewrites bench/README.md's payload section.)
"""
import asyncio
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import MYSQL_URL, ensure_mysql_database, median, replace_section, round_arguments  # noqa: E402
from bench.payload_text import draft  # noqa: E402

PAYLOAD_URL = MYSQL_URL.rsplit("/", 1)[0] + "/pipeline_payload_bench"
SIZES = (0, 2_000, 20_000, 200_000)
SHAPES = {"diamond": [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]), ("e", ["d"])],
          "fanin": [("root", [])] + [(f"draft{i}", ["root"]) for i in range(10)]
          + [("merge", [f"draft{i}" for i in range(10)])]}


# ---- one configuration, in a process of its own (--one) -----------------------------------------

async def run_ours(backend, shape, size, tasks, compress):
    from pipeline_service import PipelineService
    from pipeline_service.ids import new_id
    database = ensure_mysql_database(PAYLOAD_URL) if backend == "mysql" else \
        f"sqlite:///{tempfile.mkdtemp(prefix='payload_')}/bench.db"
    options = {} if compress else {"compress_above": None}
    service = PipelineService(database, concurrency=64, **options)
    await service.storage.create_missing_tables(include_reference=True)

    async def handler(tenant_id, task_id, step_name, input_data, config):
        return {"text": draft(size, hash((task_id, step_name)) & 0xFFFF)}
    service.register_handler("payload", handler)
    await service.define_pipeline("payload", [{"step_name": n, "step_type": "payload",
                                               **({"depends_on": d} if d else {})} for n, d in SHAPES[shape]])
    warm = [await service.submit("warm", "payload", "o") for _ in range(3)]
    for t in warm:
        await service.wait("warm", t["id"])
    tenant = "bench-" + new_id()[:8]
    t0 = time.perf_counter()
    await asyncio.gather(*(service.submit(tenant, "payload", "o") for _ in range(tasks)))
    while (await service.storage.probe("count_tasks", tenant_id=tenant, pipeline_id=None,
                                       status="succeeded"))[0]["n"] < tasks:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    steps = len(SHAPES[shape])
    output_bytes = len(json.dumps({"text": draft(size, 0)}, ensure_ascii=False,
                                  separators=(",", ":")).encode("utf-8")) * steps
    stored, table = await stored_bytes(service.storage, backend, tenant)
    await service.stop(timeout=5)
    total_tasks = tasks + len(warm)
    return {"steps_per_s": steps * tasks / elapsed, "output_bytes": output_bytes,
            "stored_ratio": stored / tasks / output_bytes,
            "table_ratio": table / total_tasks / output_bytes,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


async def stored_bytes(storage, backend, tenant):
    """(bytes of the tenant's artifact contents as stored, bytes of the artifact table on disk).
    Measurement SQL of the benchmark's own (not the package's statements)."""
    async with storage.connector.session() as sor:
        cur = sor.cur
        if backend == "mysql":
            await cur.execute("SELECT COALESCE(SUM(LENGTH(content)), 0) + COALESCE(SUM(LENGTH(packed)), 0) "
                              "FROM pipeline_artifacts WHERE tenant_id = %s", (tenant,))
            stored = (await cur.fetchone())[0]
            await cur.execute("ANALYZE TABLE pipeline_artifacts")
            await cur.fetchall()
            await cur.execute("SELECT data_length FROM information_schema.tables WHERE table_schema = DATABASE() "
                              "AND table_name = 'pipeline_artifacts'")
            table = (await cur.fetchone())[0]
        else:
            await cur.execute("SELECT COALESCE(SUM(LENGTH(CAST(content AS BLOB))), 0) + "
                              "COALESCE(SUM(LENGTH(packed)), 0) FROM pipeline_artifacts WHERE tenant_id = ?",
                              (tenant,))
            stored = (await cur.fetchone())[0]
            try:
                await cur.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'pipeline_artifacts'")
                table = (await cur.fetchone())[0]
            except Exception:  # SQLite built without dbstat
                table = float("nan")
        await sor.conn.commit()
    return int(stored), float(table)


def one(argv):
    backend, shape, size, tasks, compress = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4] == "1"
    print(json.dumps(asyncio.run(run_ours(backend, shape, size, tasks, compress))))


def ours(backend, shape, size, tasks, compress=True):
    done = subprocess.run([sys.executable, __file__, "--one", backend, shape, str(size), str(tasks),
                           "1" if compress else "0"], capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"ours on {backend} {shape} {size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- baselines ---------------------------------------------------------------------------------

async def raw_rows(size, rows=400, workers=64):
    """Rows/s of raw aiomysql: one committed INSERT of a row holding ``size`` characters of text
    (as JSON, like an output) per transaction, ``workers`` at once."""
    import aiomysql
    url = ensure_mysql_database(PAYLOAD_URL)
    p = urlsplit(url)
    pool = await aiomysql.create_pool(host=p.hostname, port=p.port or 3306, user=p.username or "root",
                                      password=p.password or "", db=p.path.lstrip("/"), autocommit=False,
                                      minsize=1, maxsize=workers, charset="utf8mb4")
    async with pool.acquire() as conn:
        async with conn.cursor() as cur:
            await cur.execute("CREATE TABLE raw_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, tenant_id VARCHAR(32), "
                              "content LONGTEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
        await conn.commit()
    left = list(range(rows))

    async def worker():
        async with pool.acquire() as conn:
            async with conn.cursor() as cur:
                while left:
                    i = left.pop()
                    text = json.dumps({"text": draft(size, i)}, ensure_ascii=False)
                    await cur.execute("INSERT INTO raw_rows (tenant_id, content) VALUES (%s, %s)", ("bench", text))
                    await conn.commit()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - t0
    pool.close()
    await pool.wait_closed()
    return rows / elapsed


def dbos_available():
    return importlib.util.find_spec("dbos") is not None


def dbos(backend, shape, size, tasks):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "dbos_payload_peer.py"), "--backend", backend,
                           "--shape", shape, "--size", str(size), "--tasks", str(tasks)],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"DBOS on {backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the sweep ---------------------------------------------------------------------------------

def measure(rounds=3, tasks=100, sizes=SIZES, shapes=tuple(SHAPES), backends=("mysql", "sqlite"),
            dbos_backends=("sqlite", "postgres")):
    has_dbos = dbos_available()
    if not has_dbos:
        print("note: dbos is not installed (pip install -r bench/requirements.txt): DBOS baseline skipped",
              flush=True)
    samples: dict = {}

    def add(key, value):
        samples.setdefault(key, []).append(value)
    for r in range(rounds):  # interleaved: every configuration once per round
        for size in sizes:
            print(f"round {r + 1}/{rounds}: {size:,} B outputs ...", flush=True)
            add(("raw", size), {"rows_per_s": asyncio.run(raw_rows(size))})
            for shape in shapes:
                for backend in backends:
                    add(("ours", backend, shape, size), ours(backend, shape, size, tasks))
                if has_dbos:
                    for backend in dbos_backends:
                        add(("dbos", backend, shape, size), dbos(backend, shape, size, tasks))
        if 20_000 in sizes:
            add(("ours", "mysql", "diamond", 20_000, "uncompressed"),
                ours("mysql", "diamond", 20_000, tasks, compress=False))
            add(("ours", "mysql", "diamond", 20_000, "2x tasks"), ours("mysql", "diamond", 20_000, 2 * tasks))
    return {"|".join(map(str, k)): {f: median([s[f] for s in v]) for f in v[0] if isinstance(v[0][f], (int, float))}
            for k, v in samples.items()} | {"tasks": tasks, "rounds": rounds, "dbos": has_dbos}


def table(r, sizes=SIZES, shapes=tuple(SHAPES)):
    """The results as Markdown lines (also printed)."""
    lines = [f"Payload sweep: {r['tasks']} tasks at once, medians of {r['rounds']} interleaved round(s); "
             "shared, noisy machine.", "",
             "| shape | output | backend | steps/s | vs raw aiomysql rows/s | vs best DBOS | stored / outputs "
             "| table / outputs | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    for shape in shapes:
        for size in sizes:
            raw = r.get(f"raw|{size}", {}).get("rows_per_s")
            peers = [r[k]["steps_per_s"] for k in (f"dbos|sqlite|{shape}|{size}", f"dbos|postgres|{shape}|{size}")
                     if k in r]
            for backend, label in (("mysql", "MariaDB"), ("sqlite", "SQLite")):
                o = r.get(f"ours|{backend}|{shape}|{size}")
                if o is None:
                    continue
                lines.append(
                    f"| {shape} | {size // 1000} KB | {label} | {o['steps_per_s']:,.0f} | "
                    + (f"{o['steps_per_s'] / raw:.2f}x of {raw:,.0f}" if raw and backend == "mysql" else "-")
                    + " | " + (f"{o['steps_per_s'] / max(peers):.1f}x" if peers else "-")
                    + (f" | {o['stored_ratio']:.2f}x | {o['table_ratio']:.2f}x" if size else " | - | -")
                    + f" | {o['rss_mb']:.0f} |")
    un, twice, base = (r.get("ours|mysql|diamond|20000|uncompressed"), r.get("ours|mysql|diamond|20000|2x tasks"),
                       r.get("ours|mysql|diamond|20000"))
    lines.append("")
    if un and base:
        lines.append(f"Goals at 20 KB (MariaDB, diamond): stored {un['stored_ratio']:.2f}x the outputs uncompressed "
                     f"(goal <= 1.1x), {base['stored_ratio']:.2f}x compressed (goal <= 0.5x); table "
                     f"{un['table_ratio']:.2f}x / {base['table_ratio']:.2f}x.")
    raw = r.get("raw|20000", {}).get("rows_per_s")
    if base and raw:
        lines.append(f"steps/s {base['steps_per_s']:,.0f} = {base['steps_per_s'] / raw:.2f}x the raw aiomysql rate "
                     f"of 20 KB rows ({raw:,.0f} rows/s; goal >= 0.7x).")
    peers = [r[k]["steps_per_s"] for k in ("dbos|sqlite|diamond|20000", "dbos|postgres|diamond|20000") if k in r]
    if base and peers:
        lines.append(f"vs DBOS 3.4 with the same outputs (best of SQLite/PostgreSQL, {max(peers):,.0f} steps/s): "
                     f"{base['steps_per_s'] / max(peers):.1f}x (goal >= 10x).")
    elif not r["dbos"]:
        lines.append("DBOS baseline skipped: dbos is not installed.")
    if twice and base:
        lines.append(f"peak RSS with {2 * r['tasks']} tasks: {twice['rss_mb']:.0f} MB vs {base['rss_mb']:.0f} MB with "
                     f"{r['tasks']} ({twice['rss_mb'] / base['rss_mb']:.2f}x; goal: flat).")
    print("\n".join(lines))
    return lines


README = ROOT / "bench" / "README.md"
START, END = "<!-- payload:start -->", "<!-- payload:end -->"


def write_readme(results, date):
    section = (f"{START}\nMeasured by `python bench/payload_bench.py` (also run by `bench/run.py`) on {date}, on a "
               "2-core machine shared with other work at the time (noisy: compare the ratios, measured in the same "
               "run, more than the absolute figures).\n\n" + "\n".join(table(results)) + f"\n{END}")
    replace_section(README, START, END, section, "Payload sweep (artifacts at real sizes)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--one":
        return one(argv[1:])
    ap = round_arguments(__doc__.splitlines()[0], 3, 100, "one round of 30 tasks (a smoke run)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--readme", action="store_true", help="rewrite bench/README.md's payload section")
    args = ap.parse_args(argv)
    rounds, tasks = (1, 30) if args.quick else (args.rounds, args.tasks)
    results = measure(rounds, tasks)
    table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.readme:
        from datetime import datetime, timezone
        write_readme(results, datetime.now(timezone.utc).strftime("%Y-%m-%d"))


if __name__ == "__main__":
    main()
