"""The benchmark suite: every goal of bench/README.md in one run, beside the peer DBOS 3.4.

    python bench/run.py [--rounds 5] [--tasks 300] [--quick] [--profile]

Ours and DBOS run the same 5-step diamond DAG with no-op handlers, interleaved
(ours-MariaDB, DBOS-SQLite, ours-SQLite, DBOS-PostgreSQL, and again), and medians
are reported: the machine is noisy. DBOS runs in its own process
(bench/dbos_peer.py), from the benchmark environment (bench/requirements.txt; it is
never a dependency of pipeline_service). Prints a table, writes bench/results.json,
bench/results.png (steps/s and per-step overhead by system) and the results section
of bench/README.md. --profile also writes a pyinstrument profile of our hot path
(bench/profile.txt).
"""
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import (cascade_bench, dag_size_bench, engine_bench, payload_bench, scale_bench,  # noqa: E402
                   storage_bench, tenant_bench)
from bench.common import MYSQL_URL, ensure_mysql_database, median, replace_section, round_arguments  # noqa: E402

README = ROOT / "bench" / "README.md"  # its results section, between the markers
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def ours(backend, tasks):
    database = ensure_mysql_database(MYSQL_URL) if backend == "mysql" else \
        f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    r = asyncio.run(engine_bench.run_backend(database, tasks, 64))
    return {"steps_per_s": r["steps_per_s"], "steps_per_s_stream": r["steps_per_s_stream"],
            "step_time_ms": r["step_time_light"], "overhead_ms": r["overhead_light"], "delay_ms": r["delay_light"],
            "overhead_stream_ms": r["overhead_stream"], "delay_stream_ms": r["delay_stream"],
            "overhead_burst_ms": r["overhead_burst"], "delay_burst_ms": r["delay_burst"],
            "cpu_burst_ms": r["cpu_ms_burst"], "server_cpu_burst_ms": r["server_cpu_ms_burst"]}


def dbos(backend, tasks):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "dbos_peer.py"), "--backend", backend,
                           "--tasks", str(tasks), "--json"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"DBOS on {backend} failed:\n{done.stderr[-2000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {"steps_per_s": r["steps_per_s"], "step_time_ms": r["overhead_ms_light"]}


RUNS = [("pipeline_service", "MariaDB", lambda t: ours("mysql", t)),
        ("DBOS 3.4", "SQLite", lambda t: dbos("sqlite", t)),
        ("pipeline_service", "SQLite", lambda t: ours("sqlite", t)),
        ("DBOS 3.4", "PostgreSQL", lambda t: dbos("postgres", t))]


def machine():
    def out(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "mariadb": out("mariadb", "--version").split("Distrib")[-1].split(",")[0].strip(),
            "postgresql": out("psql", "--version").split()[-1] if out("psql", "--version") else "?",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def measure(rounds, tasks, quick):
    samples = {(system, backend): [] for system, backend, _ in RUNS}
    for i in range(rounds):  # interleaved: A B A B
        for system, backend, run in RUNS:
            print(f"round {i + 1}/{rounds}: {system} on {backend} ...", flush=True)
            samples[(system, backend)].append(run(tasks))
    engine = {f"{s}|{b}": {k: median([x[k] for x in v]) for k in v[0]} for (s, b), v in samples.items()}
    results = {"machine": machine(), "tasks": tasks, "rounds": rounds, "engine": engine}
    print("storage, cascade, fairness, idle and multi-process figures ...", flush=True)
    results["storage"] = asyncio.run(storage_bench.measure(5 if quick else 20, 50))
    results["cascade"] = cascade_bench.measure(1000, 20 if quick else 50)
    results["fairness_ms"], _ = asyncio.run(scale_bench.fairness(backlog_tasks=2000, probes=5 if quick else 10))
    results["idle_qps"] = scale_bench.idle_queries(5.0 if quick else 10.0)
    results["processes"] = {n: asyncio.run(scale_bench.throughput(n, tasks)) for n in (1, 2, 3)}
    print("many tenants against a few ...", flush=True)
    results["tenants"] = tenant_bench.measure(rounds=1 if quick else 3)
    print("cost by DAG size ...", flush=True)
    results["dag_size"] = dag_size_bench.measure(sizes=(1000, 5000) if quick else (1000, 5000, 10000))
    print("payload sweep (0 / 2 / 20 / 200 KB outputs) ...", flush=True)
    results["payload"] = payload_bench.measure(rounds=1 if quick else 3, tasks=30 if quick else 100)
    return results


def table(r):
    e = r["engine"]
    ours_my, ours_lite = e["pipeline_service|MariaDB"], e["pipeline_service|SQLite"]
    dbos_lite, dbos_pg = e["DBOS 3.4|SQLite"], e["DBOS 3.4|PostgreSQL"]
    best_peer = max(dbos_lite["steps_per_s"], dbos_pg["steps_per_s"])
    def three(r, measure):
        return " / ".join(f"{r[f'{measure}{k}_ms']:.1f}" for k in ("", "_stream", "_burst")) + " ms"
    rows = [
        ("diamond DAG steps/s, MariaDB, one process (burst / stream)",
         f"{ours_my['steps_per_s']:.0f} / {ours_my['steps_per_s_stream']:.0f}", "≥ 1,500"),
        ("diamond DAG steps/s, SQLite (burst / stream)",
         f"{ours_lite['steps_per_s']:.0f} / {ours_lite['steps_per_s_stream']:.0f}", ""),
        ("DBOS 3.4 steps/s (burst), SQLite / PostgreSQL",
         f"{dbos_lite['steps_per_s']:.0f} / {dbos_pg['steps_per_s']:.0f}", ""),
        ("ratio ours (MariaDB) / best DBOS, burst", f"{ours_my['steps_per_s'] / best_peer:.1f}x", "≥ 8x"),
        ("ratio ours (SQLite) / DBOS (SQLite), burst",
         f"{ours_lite['steps_per_s'] / dbos_lite['steps_per_s']:.1f}x", ""),
        ("engine overhead per step, MariaDB (light / stream / burst)", three(ours_my, "overhead"), "< 2 ms"),
        ("CPU time per step, MariaDB, burst: our process + the MariaDB server",
         f"{ours_my['cpu_burst_ms']:.2f} + {ours_my['server_cpu_burst_ms']:.2f} ms", ""),
        ("time per step, one task at a time (task submit to done / 5): ours MariaDB / SQLite, "
         "DBOS SQLite / PostgreSQL",
         f"{ours_my['step_time_ms']:.1f} / {ours_lite['step_time_ms']:.1f}, "
         f"{dbos_lite['step_time_ms']:.1f} / {dbos_pg['step_time_ms']:.1f} ms", ""),
        ("successor start after its last dependency, MariaDB (light / stream / burst)",
         three(ours_my, "delay"), "< 5 ms"),
        ("storage transaction, ours vs raw aiomysql",
         f"{r['storage']['ours']:.3f} vs {r['storage']['raw']:.3f} ms "
         f"({r['storage']['ours'] / r['storage']['raw']:.2f}x)", "≤ 2x"),
        ("cascade re-run plan, 1,000-step DAG", f"{r['cascade']['plan_ms']:.1f} ms", "< 50 ms"),
        ("tenant B first step behind tenant A's 10,000 queued steps", f"{r['fairness_ms']:.0f} ms", "< 100 ms"),
        ("idle host process, MariaDB queries/s", f"{r['idle_qps']:.2f}", "≈ 1 or less"),
        ("throughput with 1 / 2 / 3 host processes, steps/s",
         " / ".join(f"{r['processes'][n]:.0f}" for n in (1, 2, 3)), ""),
        (f"the same {r['tenants']['tasks']:,} diamond tasks over " + " / ".join(
            f"{n:,}" for n in tenant_bench.TENANT_COUNTS) + " tenants, submitted then run, steps/s (ratio)",
         " / ".join(f"{r['tenants'][f'{n} tenants']:.0f}" for n in tenant_bench.TENANT_COUNTS)
         + f" ({r['tenants']['ratio']:.2f}x)", "≈ 1x"),
    ]
    for shape in dag_size_bench.SHAPES:  # one task at a time; ratio: time per step against 1,000 steps
        sizes = [k for k in r["dag_size"]["mysql"] if k.startswith(shape)]
        rows.append((f"one {shape} task of {' / '.join(k.split('-')[1] for k in sizes)} steps, MariaDB: "
                     "steps/s (time per step vs 1,000 steps)",
                     " / ".join(f"{r['dag_size']['mysql'][k]['steps_per_s']:.0f} "
                                f"({r['dag_size']['mysql'][k]['per_step_ratio']:.2f}x)" for k in sizes),
                     "linear (≈ 1x)"))
    lines = ["| measure (medians) | result | goal |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def chart(r, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -r bench/requirements.txt): no chart")
        return False
    labels = [k.replace("|", "\n") for k in r["engine"]]
    sps = [v["steps_per_s"] for v in r["engine"].values()]
    step_time = [v["step_time_ms"] for v in r["engine"].values()]
    colors = ["#2b6cb0" if k.startswith("pipeline") else "#c05621" for k in r["engine"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.bar(labels, sps, color=colors)
    left.set_title(f"diamond DAG, {r['tasks']} tasks submitted at once\n(steps/s, higher is better)", fontsize=10)
    right.bar(labels, step_time, color=colors)
    right.set_title("one task at a time: task time / 5 steps\n(ms, lower is better)", fontsize=10)
    for ax, values, fmt in ((left, sps, "{:.0f}"), (right, step_time, "{:.1f}")):
        for i, v in enumerate(values):
            ax.text(i, v, fmt.format(v), ha="center", va="bottom", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    m = r["machine"]
    fig.suptitle(f"{m['cores']} cores, {m['cpu']}, medians of {r['rounds']} interleaved rounds, {m['date']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_readme(r, has_chart):
    m = r["machine"]
    section = (f"{START}\n"
               f"Measured by `python bench/run.py` on {m['date']}: {m['cores']} cores ({m['cpu']}), Python "
               f"{m['python']}, MariaDB {m['mariadb']}, PostgreSQL {m['postgresql']}; no-op handlers, medians of "
               f"{r['rounds']} interleaved rounds. *Burst*: {r['tasks']} diamond tasks submitted at once "
               "(concurrently, as the DBOS peer starts its workflows); *stream*: the same number submitted one "
               "after another, each submit awaited; *light*: one task at a time. "
               "Reproduce: `pip install -r bench/requirements.txt && python bench/run.py`.\n\n"
               f"{table(r)}\n\n" + ("![steps/s and time per step by system](results.png)\n" if has_chart else "")
               + f"{END}")
    replace_section(README, START, END, section, "Results")


def profile(tasks):
    from pyinstrument import Profiler
    profiler = Profiler(async_mode="enabled")
    profiler.start()
    ours("mysql", tasks)
    profiler.stop()
    out = ROOT / "bench" / "profile.txt"
    out.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    print(f"profile of our diamond run on MariaDB: {out}")


def main(argv=None):
    parser = round_arguments(__doc__.splitlines()[0], 5, 300, "fewer samples (a smoke run)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md's results section")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.tasks)
    results = measure(args.rounds, args.tasks, args.quick)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(table(results))
    payload_bench.table(results["payload"])
    has_chart = chart(results, ROOT / "bench" / "results.png")
    if not args.no_readme:
        write_readme(results, has_chart)
        payload_bench.write_readme(results["payload"], results["machine"]["date"])
    return results


if __name__ == "__main__":
    main()
