"""The engine of another commit against this checkout's, on MariaDB, in interleaved rounds.

    python bench/compare_commits.py REF [--rounds 5] [--tasks 300] [--our-schema]

Answers "did a change make the engine slower?" on the machine at hand: absolute figures
move from day to day and machine to machine (a busy or slower machine halves them), a
ratio measured in one run does not. REF (a commit, tag or branch) is checked out in a
temporary git worktree; each round runs bench/engine_bench.py's burst and stream runs
(the 5-step diamond, ``--tasks`` tasks) once for REF and once for this checkout, each in
a process of its own, alternating (each goes first in every other round); the medians and their
ratio are printed.

With --our-schema, REF's engine runs on the tables of this checkout (created here first; REF
creates only what is missing): the ratio is then the engine code's alone, without what a
schema change (an index more to keep up to date) costs or saves.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import median, round_arguments, tree_env, worktree  # noqa: E402

# run in the tree measured: its own bench/engine_bench.py on its own pipeline_service, in a fresh
# database ({database}: ensure_mysql_database(MYSQL_URL)) or in the one just made (MYSQL_URL)
MEASURE = ("import asyncio, json, sys; sys.path.insert(0, '.');"
           "from bench import engine_bench; from bench.common import MYSQL_URL, ensure_mysql_database;"
           "r = asyncio.run(engine_bench.run_backend({database}, {tasks}, 64));"
           "print(json.dumps({{'burst': r['steps_per_s'], 'stream': r['steps_per_s_stream']}}))")
# this checkout's tables in a fresh database, for --our-schema
OUR_TABLES = ("import asyncio; from bench.common import MYSQL_URL, ensure_mysql_database;"
              "from pipeline_service import PipelineService;"
              "asyncio.run(PipelineService(ensure_mysql_database(MYSQL_URL)).storage"
              ".create_missing_tables(include_reference=True))")


def run_in(tree: Path, tasks: int, our_tables: bool = False) -> dict:
    if our_tables:
        subprocess.run([sys.executable, "-c", OUR_TABLES], cwd=ROOT, check=True, timeout=300, env=tree_env(ROOT))
    database = "MYSQL_URL" if our_tables else "ensure_mysql_database(MYSQL_URL)"
    done = subprocess.run([sys.executable, "-c", MEASURE.format(tasks=tasks, database=database)], cwd=tree,
                          capture_output=True, text=True, timeout=900, env=tree_env(tree))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the engine bench failed in {tree}:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def compare(ref: str, rounds: int, tasks: int, our_schema: bool = False) -> dict:
    samples: dict[str, list] = {ref: [], "this checkout": []}
    with worktree(ref) as other:
        for i in range(rounds):
            pair = ((ref, other), ("this checkout", ROOT))
            # each goes first in every other round: the first run of a pair was ~3% faster in
            # the burst when one commit was compared with itself (bench/README)
            for name, tree in (pair if i % 2 == 0 else pair[::-1]):
                samples[name].append(run_in(tree, tasks, our_schema and tree == other))
                print(f"round {i + 1}/{rounds}: {name}: {samples[name][-1]}", flush=True)
    return {name: {k: median([s[k] for s in runs]) for k in ("burst", "stream")} for name, runs in samples.items()}


def main(argv=None):
    parser = round_arguments(__doc__.splitlines()[0], 5, 300, "two rounds of 100 tasks (a smoke run)")
    parser.add_argument("ref", help="the commit to compare with (e.g. a tag, a branch, HEAD~10)")
    parser.add_argument("--our-schema", action="store_true",
                        help="run REF's engine on this checkout's tables (the engine code's cost alone)")
    args = parser.parse_args(argv)
    rounds, tasks = (2, 100) if args.quick else (args.rounds, args.tasks)
    result = compare(args.ref, rounds, tasks, args.our_schema)
    base, ours = result[args.ref], result["this checkout"]
    tables = "both on this checkout's tables" if args.our_schema else "each on its own tables"
    print(f"\nMariaDB, diamond DAG, {tasks} tasks, {tables}, medians of {rounds} interleaved rounds (steps/s):")
    for run in ("burst", "stream"):
        print(f"  {run}: {args.ref} {base[run]:.0f}, this checkout {ours[run]:.0f} ({ours[run] / base[run]:.2f}x)")
    return result


if __name__ == "__main__":
    main()
