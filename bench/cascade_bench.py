"""Cascade re-run planning over a generated 1,000-step DAG (goal in bench/README.md: under 50 ms).

The DAG is layered (20 layers of 50 steps, each step depending on up to 3 steps of
the layer before), the edit is an output in the second layer plus a rerun_from in
the first, so the affected set is most of the DAG. Times the plan alone (affected
set: the steps to re-run and to interrupt), and building the validated DAG from step rows beside it.
Run: python bench/cascade_bench.py [--steps 1000 --repeat 50]
"""
import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import median  # noqa: E402
from pipeline_service.dag import Dag, StepDef, cascade_plan  # noqa: E402


def generate(steps, width=50, fan_in=3, seed=7):
    rng = random.Random(seed)
    defs, layers = [], []
    for layer in range(steps // width):
        names = [f"s{layer:03d}_{i:03d}" for i in range(width)]
        for name in names:
            deps = rng.sample(layers[-1], k=min(fan_in, len(layers[-1]))) if layers else []
            defs.append(StepDef(name, "noop", tuple(deps), {}, len(defs)))
        layers.append(names)
    return defs, layers


def measure(steps, repeat):
    defs, layers = generate(steps)
    build, plan_times = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        dag = Dag(defs)
        build.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        plan = cascade_plan(dag, {layers[1][0]: {"output": {"edited": True}}}, rerun_from=layers[0][1])
        plan_times.append((time.perf_counter() - t) * 1000)
    return {"plan_ms": median(plan_times), "build_ms": median(build), "affected": len(plan.rerun)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    r = measure(args.steps, args.repeat)
    print(f"cascade plan over a {args.steps}-step DAG ({r['affected']} steps affected), median of {args.repeat}:")
    print(f"  plan (affected set): {r['plan_ms']:.2f} ms   (goal < 50 ms)")
    print(f"  building the validated DAG           : {r['build_ms']:.2f} ms")
    return r


if __name__ == "__main__":
    main()
