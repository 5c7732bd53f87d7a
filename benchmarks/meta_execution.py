"""Time and peak memory of one second-order MAML meta-iteration under each execution: vmap, chunk, loop.

One meta-iteration is ``zero_grad`` + ``MAML(...).meta_loss(batch, loss_fn)`` + ``loss.backward()`` (no
optimizer step), for three models, each with 1, 3 and 5 inner SGD steps:

* ``sinusoid``: ``sinusoid_mlp()`` (1-40-40-1), 25 tasks, 10 support + 10 query points, alpha 0.01 (MAML §5.1);
* ``wide_mlp``: ``MLP((1, 512, 512, 1))``, 25 sinusoid tasks, 50 support + 50 query points, alpha 0.01;
* ``conv4``: ``Conv4(5, strided=True, bn="batch")`` (MAML's Omniglot net), 32 tasks of 5-way 1-shot with 5
  queries per class, alpha 0.4. The 1x28x28 images are random: time and memory do not depend on pixel values.

Executions (:mod:`mapping.meta.functional`): ``vmap`` (all tasks in one vmapped graph), ``chunk8`` / ``chunk4``
(vmap over chunks of 8 / 4 tasks, one backward per chunk), ``loop`` (one task at a time). For Conv-4 only,
``vmap_unrouted`` is ``vmap`` with the primitive-op norm routing (:mod:`mapping.nn.norms`) switched off by
patching ``mapping.meta.functional.primitive_norms`` in this script: it prices the routing and gives WRONG
meta-gradients. ``grad_err``: relative distance of the float32 meta-gradient from vmap's; rounding alone reaches
3e-3 for Conv-4's loop on 2 threads (in float64 the routed executions agree to 1e-14, unrouted stays 1e-3 off).

Time: the executions of one (model, steps) configuration run side by side in this process, after a warm-up
iteration each, interleaved round-robin (the first one rotates) over ``--repeats`` rounds of blocks of about
``--block`` seconds. Reported: median ms per iteration and its ratio to vmap.

Peak memory, on one thread: one iteration under ``torch.profiler.profile(profile_memory=True)``; every allocation
and free of torch's CPU allocator is an event with a signed size, and the largest running sum in time order is
the most memory the iteration holds at once beyond what was live before it (new ``.grad`` tensors included).
The method is checked first on known allocations (abort if it misses them); ``--memory rss`` measures peak RSS
instead, as an independent cross-check. ``python benchmarks/meta_execution.py --help`` lists the options.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib
import sys
import time
from unittest import mock

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mapping import results
from mapping.timing import time_interleaved
from mapping.data import Sinusoid, TaskBatch
from mapping.meta import MAML
from mapping.nn import MLP, Conv4, sinusoid_mlp

meta_functional = importlib.import_module("mapping.meta.functional")  # the name is shadowed by a function
MIB = 2 ** 20
EXECUTIONS = {"vmap": ("vmap", 8), "chunk8": ("chunk", 8), "chunk4": ("chunk", 4), "loop": ("loop", 8)}
MEMORY_METHODS = {"profiler": "torch.profiler profile_memory=True: max running sum of the CPU allocator's signed "
                              "allocation events in time order, one iteration, one thread",
                  "rss": "Linux VmHWM (reset through /proc/self/clear_refs) minus VmRSS before one iteration, one "
                         "thread, run with MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0"}


def sinusoid_batch(tasks: int, shots: int, seed: int) -> TaskBatch:
    return Sinusoid().sample(tasks, shots, shots, torch.Generator().manual_seed(seed))  # x, y: (tasks, shots, 1)


def omniglot_batch(tasks: int, ways: int, shots: int, queries: int, seed: int, side: int = 28) -> TaskBatch:
    """Random images shaped like an N-way K-shot Omniglot batch (the values do not change time or memory)."""
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(tasks, ways * shots, 1, side, side, generator=g)  # (tasks, ways*shots, 1, side, side)
    qx = torch.rand(tasks, ways * queries, 1, side, side, generator=g)  # (tasks, ways*queries, 1, side, side)
    sy = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1)  # (tasks, ways*shots)
    qy = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1)  # (tasks, ways*queries)
    return TaskBatch(sx, sy, qx, qy)


def configs(tiny: bool, seed: int) -> dict[str, tuple]:
    """name -> (model factory, batch, loss_fn, alpha, also time vmap without norm routing, description)."""
    # tasks x shots of sinusoid / wide MLP / Conv-4 (queries per class), hidden widths; --tiny: a smoke-test size
    (st, sk), (wt, wk, width), (ct, cq, filters) = ((4, 5), (8, 20, 128), (4, 1, 8)) if tiny else \
        ((25, 10), (25, 50, 512), (32, 5, 64))
    return {"sinusoid": (sinusoid_mlp, sinusoid_batch(st, sk, seed), F.mse_loss, 0.01, False,
                         f"1-40-40-1, {st} tasks x {sk}+{sk}"),
            "wide_mlp": (lambda: MLP((1, width, width, 1)), sinusoid_batch(wt, wk, seed), F.mse_loss, 0.01, False,
                         f"1-{width}-{width}-1, {wt} tasks x {wk}+{wk}"),
            "conv4": (lambda: Conv4(5, hidden=filters, strided=True, bn="batch"), omniglot_batch(ct, 5, 1, cq, seed),
                      F.cross_entropy, 0.4, True, f"Conv-4 ({filters} filters), {ct} tasks 5w1s{cq}q, random 1x28x28")}


def make_step(model, batch, loss_fn, alpha, steps, execution, chunk, routed=True):
    """One meta-iteration: zero_grad + meta_loss + backward (the unrouted one patches the norm routing out)."""
    maml = MAML(model, alpha, steps, execution=execution, chunk_size=chunk)

    def step():
        maml.zero_grad(set_to_none=True)
        off = contextlib.nullcontext() if routed else mock.patch.object(
            meta_functional, "primitive_norms", contextlib.nullcontext)
        with off:
            maml.meta_loss(batch, loss_fn).backward()
    return step, maml


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def peak_mib(fn) -> float:
    """Most MiB held at once by torch's CPU allocator while ``fn()`` runs, beyond what was live before."""
    with one_thread(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), i, e.nbytes()) for i, e in enumerate(prof.profiler.kineto_results.events())
                    if e.name() == "[memory]" and e.device_type().name == "CPU")
    live = peak = 0
    for _, _, nbytes in events:  # + allocation, - free
        live += nbytes
        peak = max(peak, live)
    return peak / MIB


def validate_memory(peak) -> dict[str, float]:
    """``peak`` on known allocations; aborts unless it reports them within 0.5 MiB (the profiler: exactly)."""
    def single():
        torch.ones(8 * MIB)  # 32 MiB of float32, freed at once

    def sequence():  # 32 MiB freed; then 16 MiB held + 2 x 12 MiB -> peak 40 MiB, not 72
        a = torch.ones(8 * MIB)  # 32 MiB
        del a
        held = torch.ones(4 * MIB)  # 16 MiB
        b, c = torch.ones(3 * MIB), torch.ones(3 * MIB)  # 12 MiB each
        del b, c, held
    sequence()  # warm-up: first calls load code, which RSS would count
    got = {"32MiB": peak(single), "32-32+16+12+12": peak(sequence)}
    if abs(got["32MiB"] - 32) > 0.5 or abs(got["32-32+16+12+12"] - 40) > 0.5:
        sys.exit(f"ABORT: the memory method misses known allocations (expected 32 and 40 MiB): {got}")
    return got


def status_mib(key: str) -> float:  # /proc/self/status reports kB
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith(key + ":")) / 1024


def rss_peak_mib(fn) -> float:
    """Cross-check of ``peak_mib`` (Linux): peak RSS over ``fn()`` beyond the RSS before it (VmHWM reset by
    clear_refs). Tracks live memory only if glibc maps every large block and unmaps it when freed (the
    MALLOC_* variables of --memory rss) and the profiler never ran in this process (its leftovers skew RSS)."""
    gc.collect()
    with one_thread(), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
        f.flush()
        before = status_mib("VmRSS")
        fn()
        return status_mib("VmHWM") - before


def grad_error(grads, ref) -> float:
    diff = torch.cat([(g - r).flatten() for g, r in zip(grads, ref)])  # (parameters,)
    return (diff.norm() / torch.cat([r.flatten() for r in ref]).norm()).item()


def run_config(name, spec, steps, args) -> list[dict]:
    """Time, memory and gradient error of every execution on one (model, inner steps) configuration."""
    make_model, batch, loss_fn, alpha, unrouted, _ = spec
    torch.manual_seed(args.seed)
    initial = make_model()
    variants = {label: (ex, chunk, True) for label, (ex, chunk) in EXECUTIONS.items()}
    if unrouted:
        variants["vmap_unrouted"] = ("vmap", 8, False)
    fns, grads = {}, {}
    for label, (ex, chunk, routed) in variants.items():
        fns[label], maml = make_step(copy.deepcopy(initial), batch, loss_fn, alpha, steps, ex, chunk, routed)
        fns[label]()  # warm-up; its meta-gradient is compared with vmap's
        grads[label] = [p.grad.clone() for p in maml.parameters()]
    ms = time_interleaved(fns, args.repeats, args.block)
    peak = peak_mib if args.memory == "profiler" else rss_peak_mib
    return [{"config": name, "steps": steps, "execution": label, "ms": ms[label], "ratio": ms[label] / ms["vmap"],
             "peak_mib": peak(fns[label]), "grad_err": grad_error(grads[label], grads["vmap"])}
            for label in variants]


def table(rows: list[dict]) -> str:
    lines = ["| config | steps | execution | ms/iter | ratio to vmap | peak MiB | grad err vs vmap |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        label = r["execution"] + (" (WRONG gradients)" if r["execution"] == "vmap_unrouted" else "")
        lines.append(f"| {r['config']} | {r['steps']} | {label} | {r['ms']:.2f} | {r['ratio']:.2f}x | "
                     f"{r['peak_mib']:.1f} | {r['grad_err']:.1e} |")
    return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the timing (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--block", type=float, default=0.25, help="seconds per timed block (at least 1 iteration)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3, 5], help="inner steps to measure")
    parser.add_argument("--configs", nargs="+", default=["sinusoid", "wide_mlp", "conv4"], help="which models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 round of 1-iteration blocks, for a smoke run")
    parser.add_argument("--tiny", action="store_true", help="small models and batches, for the test suite")
    parser.add_argument("--memory", choices=list(MEMORY_METHODS), default="profiler",
                        help="rss: cross-check by peak RSS; run with MALLOC_MMAP_THRESHOLD_=65536 "
                        "MALLOC_TRIM_THRESHOLD_=0 in the environment")
    parser.add_argument("--out", default=None, help="also write <out>/<name>.json with provenance (e.g. results)")
    parser.add_argument("--name", default="benchmark_meta_execution", help="record name")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    began = time.perf_counter()
    if args.quick:
        args.repeats, args.block = 1, 0.0
    torch.set_num_threads(args.threads)
    validation = validate_memory(peak_mib if args.memory == "profiler" else rss_peak_mib)
    specs = configs(args.tiny, args.seed)
    rows = [row for name in args.configs for steps in args.steps
            for row in run_config(name, specs[name], steps, args)]
    print(f"One second-order MAML meta-iteration (meta_loss + backward), median of {args.repeats} interleaved "
          f"rounds; torch {torch.__version__}, {torch.get_num_threads()} thread(s); peak memory: {args.memory} "
          f"(known allocations of 32 and 40 MiB read as {validation}).\n")
    print(table(rows))
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    record = results.provenance(args.name, command="python benchmarks/meta_execution.py "
                                + " ".join(argv if argv is not None else sys.argv[1:]),
                                mode=mode, seed=args.seed, device=torch.device("cpu"))
    metrics = {}
    for r in rows:
        key = f"{r['config']}/steps{r['steps']}/{r['execution']}"
        metrics.update({f"{key}/ms_per_iter": round(r["ms"], 3), f"{key}/ratio_vs_vmap": round(r["ratio"], 3),
                        f"{key}/peak_mib": round(r["peak_mib"], 2), f"{key}/grad_rel_err": r["grad_err"]})
    record.update(metrics=metrics, wall_seconds=time.perf_counter() - began,
                  config={"threads": torch.get_num_threads(), "repeats": args.repeats, "block_seconds": args.block,
                          "steps": args.steps, "models": {n: specs[n][5] for n in args.configs},
                          "executions": {**EXECUTIONS, "vmap_unrouted": "vmap without norm routing (conv4 only)"},
                          "memory_method": MEMORY_METHODS[args.memory], "memory_validation_mib": validation})
    if args.out:
        print(f"wrote {results.write(record, args.out)}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
