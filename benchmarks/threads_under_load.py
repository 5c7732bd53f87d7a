"""Torch's CPU threads on a quiet machine and on one where another program holds a core.

A page of the book built while something else runs (a reader's laptop, a second build, a test run) can slow
down by an order of magnitude: OpenMP's worker threads spin while they wait for a core that is busy elsewhere.
Each configuration runs in a fresh process (OpenMP reads its environment when torch loads), timing a training
step for a fixed number of seconds:

* ``conv4``: one Adam step of the 64-filter Conv-4 on a batch of 64 Omniglot-sized images (chapters 1, 2, 5);
* ``maml``: one second-order MAML meta-step on the 1-40-40-1 sinusoid network, 25 tasks (chapter 3);

with 1 thread, 2 threads (torch's default here), 2 threads under ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads
sleep instead of spinning), and 2 threads that spin a bounded while before they sleep (``GOMP_SPINCOUNT``, read
by the GNU OpenMP that torch's Linux wheels ship; its default spins 300,000 times), each with the machine quiet
and with ``--busy`` processes spinning. The
configurations of one load are timed one after another in interleaved rounds. ``--out results`` writes
``results/benchmark_threads_load.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mapping import results  # noqa: E402
from mapping.report import threads_key  # noqa: E402

CONFIGS = {"1 thread": (1, {}), "2 threads": (2, {}), "2 threads, passive": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
           "2 threads, spin 3k": (2, {"GOMP_SPINCOUNT": "3000"}),
           "2 threads, spin 1k": (2, {"GOMP_SPINCOUNT": "1000"})}
OPENMP_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
STEP = r'''
import sys, time, torch
import torch.nn.functional as F
torch.set_num_threads(int(sys.argv[2]))
if sys.argv[1] == "conv4":
    from mapping.nn import Conv4
    net = Conv4(5, hidden=64)
    opt = torch.optim.Adam(net.parameters())
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 5, (64,))
    def step():
        opt.zero_grad(); F.cross_entropy(net(x), y).backward(); opt.step()
else:
    from mapping.data import Sinusoid
    from mapping.meta import MAML
    from mapping.nn import sinusoid_mlp
    maml = MAML(sinusoid_mlp(), alpha=0.01, steps=1, execution="vmap")
    opt = torch.optim.Adam(maml.parameters())
    batch = Sinusoid().sample(25, k_shot=10, q_query=10)
    def step():
        opt.zero_grad(); maml.meta_loss(batch, F.mse_loss).backward(); opt.step()
for _ in range(3):
    step()
start, n = time.perf_counter(), 0
while time.perf_counter() - start < float(sys.argv[3]):
    step(); n += 1
print((time.perf_counter() - start) / n * 1000)
'''


def time_step(model: str, threads: int, openmp: dict[str, str], seconds: float) -> float:
    """ms per step of ``model`` in a fresh process with the OpenMP variables ``openmp`` (and no others)."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_ENV} | openmp
    out = subprocess.run([sys.executable, "-c", STEP, model, str(threads), str(seconds)], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per configuration and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy", type=int, default=1, help="spinning processes in the loaded runs")
    parser.add_argument("--models", nargs="+", default=["conv4", "maml"], choices=["conv4", "maml"])
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    start, metrics = time.perf_counter(), {}
    for load in (0, args.busy):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        try:
            times: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for model in args.models:
                    for label, (threads, openmp) in CONFIGS.items():
                        times.setdefault(f"{model}/{label}", []).append(time_step(model, threads, openmp,
                                                                                  args.seconds))
        finally:
            for p in busy:
                p.kill()
                p.wait()
        for key, values in times.items():
            model, setting = key.split("/", 1)
            metrics[threads_key(load, model, setting)] = round(min(values), 3)
            print(f"{load} busy  {key:<30} {min(values):9.2f} ms/step")
    if args.out:
        command = "python benchmarks/threads_under_load.py " + " ".join(argv if argv is not None else sys.argv[1:])
        record = results.provenance("benchmark_threads_load", command=command, mode="full", seed=0)
        record.update(wall_seconds=round(time.perf_counter() - start, 1), metrics=metrics,
                      config={"seconds": args.seconds, "rounds": args.rounds, "busy": args.busy,
                              "cores": os.cpu_count(), "configs": {k: list(v) for k, v in CONFIGS.items()}})
        print("wrote", os.path.relpath(results.write(record, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
