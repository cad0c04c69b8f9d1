"""The engine's CPU per step, counted in instructions: this checkout against another commit.

    python bench/instructions.py REF [--tasks 200]

Timed figures on this shared 2-core machine move by 5-10% between two runs of the same code
(bench/README.md), more than most changes do.  valgrind's callgrind counts the instructions
a process executes, the same for the same work whatever else the machine does.  Each tree
runs the same work in a process of its own under callgrind: the 5-step diamond, ``--tasks``
tasks submitted one after another on MariaDB, then stepped by hand (``executor.run_once()``:
no loop, no timer, so no work that depends on time) until nothing is left; and once with no
task, whose count (start-up, imports, schema) is subtracted.  Printed: instructions per step
of each tree and their ratio (the MariaDB server's own work is not counted).

REF must have ``run_once`` (the engine after the redesign of issue #12); it is checked out
in a temporary git worktree.  Needs valgrind (Debian's package).
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import tree_env, worktree  # noqa: E402

# run in the tree measured (its own pipeline_service): N diamond tasks, stepped by hand
WORK = """
import asyncio, sys
sys.path.insert(0, '.')
from pipeline_service import PipelineService
from bench.common import MYSQL_URL, ensure_mysql_database, diamond

async def main(tasks):
    service = PipelineService(ensure_mysql_database(MYSQL_URL), concurrency=64, autostart=False)
    await service.storage.create_missing_tables(include_reference=True)

    async def noop(tenant_id, task_id, step_name, input_data, config):
        return {}
    service.register_handler("noop", noop)
    await service.define_pipeline("counted", diamond("noop"))
    for i in range(tasks):
        await service.submit("counted", "counted", "o", f"t{i}", {"i": i})
    steps = 0
    while True:
        claims = (await service.executor.run_once()).claims
        if not claims:
            break
        steps += len(claims)
    await service.stop(timeout=5)
    assert steps == 5 * tasks, f"{steps} steps ran for {tasks} tasks"

asyncio.run(main(int(sys.argv[1])))
"""
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def instructions(tree: Path, tasks: int) -> int:
    """Instructions executed by the work of ``tasks`` tasks in ``tree`` (a process under callgrind)."""
    with tempfile.TemporaryDirectory(prefix="callgrind-") as out:
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out",
                               *work(tasks)], cwd=tree, capture_output=True, text=True, timeout=3600,
                              env=tree_env(tree))
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"the counted run failed in {tree}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_step(tree: Path, tasks: int) -> float:
    # a run outside callgrind first: a fresh worktree compiles its modules once (.pyc), in no count
    subprocess.run(work(0), cwd=tree, capture_output=True, check=True, timeout=600, env=tree_env(tree))
    return (instructions(tree, tasks) - instructions(tree, 0)) / (5 * tasks)


def work(tasks: int) -> list[str]:
    return [sys.executable, "-c", WORK, str(tasks)]



def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="the commit to compare with (one that has executor.run_once)")
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    with worktree(args.ref) as other:
        result = {args.ref: per_step(other, args.tasks), "this checkout": per_step(ROOT, args.tasks)}
    base, ours = result[args.ref], result["this checkout"]
    print(f"instructions per step (diamond, {args.tasks} tasks stepped by hand, MariaDB; our process only): "
          f"{args.ref} {base:,.0f}, this checkout {ours:,.0f} ({ours / base:.3f}x)")
    return result


if __name__ == "__main__":
    main()
