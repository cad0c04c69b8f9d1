"""Helpers shared by the benchmarks: database URLs, timing rounds, medians."""
import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

MYSQL_URL = os.environ.get("PIPELINE_BENCH_MYSQL", "mysql://root@127.0.0.1:3306/pipeline_bench")
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """Commit ``ref`` checked out in a temporary git worktree (removed afterwards): another
    version of the engine to measure beside this checkout's."""
    with tempfile.TemporaryDirectory(prefix="pipeline-ref-") as parent:
        tree = Path(parent) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), ref], cwd=ROOT, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a process that runs ``tree``'s own pipeline_service and bench."""
    return {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}


def ensure_mysql_database(url=MYSQL_URL):
    from urllib.parse import urlsplit
    import pymysql
    parts = urlsplit(url)
    conn = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                           password=parts.password or "", autocommit=True)
    with conn.cursor() as cur:  # a fresh database for every benchmark run
        cur.execute(f"DROP DATABASE IF EXISTS {parts.path.lstrip('/')}")
        cur.execute(f"CREATE DATABASE {parts.path.lstrip('/')} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()
    return url


async def timed(fn, n):
    """Per-call durations in milliseconds of n sequential awaits of fn()."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def server_cpu_seconds():
    """CPU seconds used so far by the local MariaDB server (None if it is not visible here)."""
    import subprocess
    try:
        pid = subprocess.run(["pidof", "mariadbd", "mysqld"], capture_output=True, text=True).stdout.split()[0]
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except (IndexError, OSError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def median(values):
    return statistics.median(values) if values else float("nan")


def diamond(step_type):
    """The benchmarks' 5-step diamond DAG: a -> (b, c) -> d -> e."""
    return [
        {"step_name": "a", "step_type": step_type},
        {"step_name": "b", "step_type": step_type, "depends_on": ["a"]},
        {"step_name": "c", "step_type": step_type, "depends_on": ["a"]},
        {"step_name": "d", "step_type": step_type, "depends_on": ["b", "c"]},
        {"step_name": "e", "step_type": step_type, "depends_on": ["d"]},
    ]


def round_arguments(description, rounds, tasks, quick_help):
    """A parser with the options every interleaved benchmark takes: --rounds, --tasks, --quick."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds (medians are reported)")
    parser.add_argument("--tasks", type=int, default=tasks)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def replace_section(readme: Path, start, end, section, heading):
    """Put ``section`` (it begins with ``start`` and ends with ``end``) in ``readme`` in place of
    the text between those markers; appended under ``heading`` the first time."""
    text = readme.read_text()
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text += f"\n## {heading}\n\n{section}\n"
    readme.write_text(text)
