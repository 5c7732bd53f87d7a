"""Eager against compiled (``compile=True``, :mod:`mapping.meta.compiled`) meta-steps, side by side, per thread count.

One step is ``zero_grad`` + the method's loss + ``backward`` (Reptile's too: every learner's ``meta_loss``), no optimizer step:

* ``sinusoid/<method>``: MAML, first-order MAML, Meta-SGD, ANIL (one inner step, alpha 0.01) and Reptile (5 SGD
  steps on support + query) on the 1-40-40-1 MLP, 25 tasks of 10 + 10 points (Finn et al. 2017, §5.1);
* ``omniglot/maml``: second-order MAML with MAML's strided Conv-4 (batch statistics), alpha 0.4, one inner step,
  ``--conv-tasks`` tasks of 5-way 1-shot with 5 queries per class, random 1x28x28 images;
* ``omniglot/protonet`` and ``omniglot/matching``: the metric losses with the 64-filter Conv-4, ``--conv-tasks``
  tasks of 5-way 1-shot with 5 queries per class.

For each thread count (``--threads 1 2``) both learners of a configuration are built afresh from the same weights
and compiled under that count (inductor generates its C++ kernels for the thread count it compiles under), their
gradients are checked to agree (relative distance under 1e-2 in float32, recorded as ``grad_rel_err``: rounding
alone reaches 3e-3 on Conv-4's metric losses, while in float64 eager and compiled agree to 1e-13), the compiled
one's first call is timed as its compile time, and the two are then timed interleaved with those of the other
thread counts, the thread count set before every block (:func:`mapping.timing.time_interleaved`), so that every
ratio, between implementations and between thread counts, is measured side by side. ``--out results`` writes
``results/benchmark_compiled_steps.json``; ``--tiny --quick`` is the seconds-long smoke run of the tests.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meta_execution import omniglot_batch, sinusoid_batch  # noqa: E402

from mapping import results  # noqa: E402
from mapping.meta import (ANIL, FOMAML, MAML, MatchingNetwork, MetaSGD, PrototypicalNetwork, Reptile,  # noqa: E402
                          compile_seconds)
from mapping.nn import Conv4, sinusoid_mlp  # noqa: E402
from mapping.timing import time_interleaved  # noqa: E402

SINUSOID = {"maml": MAML, "fomaml": FOMAML, "metasgd": MetaSGD, "anil": ANIL}


def configs(tiny: bool, conv_tasks: int) -> dict[str, tuple]:
    """name -> (learner factory ``make(net, compile)``, network factory, batch, loss_fn)."""
    st, sk, filters, ct = (4, 5, 8, 2) if tiny else (25, 10, 64, conv_tasks)
    out = {}
    for name, cls in SINUSOID.items():
        out[f"sinusoid/{name}"] = (lambda net, c, cls=cls: cls(net, alpha=0.01, steps=1, execution="vmap",
                                                               compile=c),  # ANIL: the module's head_names()
                                   sinusoid_mlp, sinusoid_batch(st, sk, 0), F.mse_loss)
    out["sinusoid/reptile"] = (lambda net, c: Reptile(net, alpha=0.01, steps=5, execution="vmap", compile=c),
                               sinusoid_mlp, sinusoid_batch(st, sk, 0), F.mse_loss)
    out["omniglot/maml"] = (lambda net, c: MAML(net, alpha=0.4, steps=1, execution="vmap", compile=c),
                            lambda: Conv4(5, hidden=filters, strided=True, bn="batch"),
                            omniglot_batch(ct, 5, 1, 5, 0), F.cross_entropy)
    for name, cls in (("protonet", PrototypicalNetwork), ("matching", MatchingNetwork)):
        out[f"omniglot/{name}"] = (lambda net, c, cls=cls: cls(net, compile=c), lambda: Conv4(hidden=filters),
                                   omniglot_batch(ct, 5, 1, 5, 0), None)
    return out


def relative_error(a: list, b: list) -> float:
    """``||a - b|| / ||b||`` over all gradient entries (float32 rounding differs between eager and compiled)."""
    num = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b)) ** 0.5
    return num / sum(float((y ** 2).sum()) for y in b) ** 0.5


def make_step(learner, batch, loss_fn):
    def step():
        learner.zero_grad(set_to_none=True)
        if isinstance(learner, Reptile):
            learner.meta_loss(batch, loss_fn).backward()
        elif loss_fn is None:  # a metric learner
            learner.meta_loss(batch).backward()
        else:
            learner.meta_loss(batch, loss_fn).backward()
    return step


def build_pair(name, spec, threads, args) -> tuple[dict, dict[str, float]]:
    """Eager and compiled steps of one configuration, built and compiled under ``threads`` torch threads (inductor's
    C++ kernels keep the thread count they were compiled for); checks their gradients and returns the steps and
    the metrics known before timing."""
    make, net_factory, batch, loss_fn = spec
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = net_factory()
    eager, compiled = make(copy.deepcopy(net), False), make(copy.deepcopy(net), {"backend": args.backend})
    steps = {"eager": make_step(eager, batch, loss_fn), "compiled": make_step(compiled, batch, loss_fn)}
    grads = {}
    for label, learner in (("eager", eager), ("compiled", compiled)):
        tic = time.perf_counter()
        steps[label]()
        first = time.perf_counter() - tic
        grads[label] = [p.grad for p in learner.parameters() if p.grad is not None]
    seconds = compile_seconds(compiled)
    if seconds is None:
        sys.exit(f"ABORT: torch.compile of {name} fell back to eager")
    err = relative_error(grads["compiled"], grads["eager"])
    if not err < 1e-2:  # float32 rounding: up to 3e-3 on Conv-4 (in float64 the two agree to 1e-13)
        sys.exit(f"ABORT: the compiled gradient of {name} is {err:.1e} away from the eager one (relative)")
    key = f"{name}/threads{threads}"
    return steps, {f"{key}/compile_seconds": seconds, f"{key}/first_call_seconds": first, f"{key}/grad_rel_err": err}


def on_threads(fn, threads: int):
    """``fn`` run with ``threads`` torch threads (set before every call: the blocks of other counts interleave)."""
    def run():
        torch.set_num_threads(threads)
        fn()
    return run


def run_config(name, spec, thread_counts, args) -> dict[str, float]:
    """Eager and compiled, at every thread count, all timed side by side (interleaved blocks)."""
    metrics, fns = {}, {}
    for t in thread_counts:
        steps, known = build_pair(name, spec, t, args)
        metrics.update(known)
        fns.update({f"{kind}@{t}": on_threads(step, t) for kind, step in steps.items()})
    ms = time_interleaved(fns, args.repeats, args.block)
    for t in thread_counts:
        key, eager, compiled = f"{name}/threads{t}", ms[f"eager@{t}"], ms[f"compiled@{t}"]
        metrics.update({f"{key}/eager/ms_per_step": eager, f"{key}/compiled/ms_per_step": compiled,
                        f"{key}/speedup": eager / compiled})
        print(f"{name:<20}{t:>8}{eager:>10.2f}{compiled:>10.2f}{eager / compiled:>9.2f}x"
              f"{metrics[key + '/compile_seconds']:>10.1f}", flush=True)
    return metrics


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to compare")
    parser.add_argument("--only", nargs="+", default=None, help="configurations to run (default: all)")
    parser.add_argument("--conv-tasks", type=int, default=8, help="tasks of the Conv-4 batches")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--block", type=float, default=1.0, help="seconds per timed block")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: no code generation)")
    parser.add_argument("--tiny", action="store_true", help="small models and batches (smoke test)")
    parser.add_argument("--quick", action="store_true", help="one round of short blocks (smoke test)")
    parser.add_argument("--out", default=None, help="also write <out>/benchmark_compiled_steps.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.block = 1, 0.05
    began, before = time.perf_counter(), torch.get_num_threads()
    specs = configs(args.tiny, args.conv_tasks)
    names = args.only or list(specs)
    unknown = sorted(set(names) - set(specs))
    if unknown:
        parser.error(f"--only: unknown configurations {unknown}; choose from {list(specs)}")
    print(f"{'configuration':<20}{'threads':>8}{'eager':>10}{'compiled':>10}{'speed-up':>10}{'compile s':>10}")
    metrics = {}
    try:
        for name in names:
            metrics.update(run_config(name, specs[name], args.threads, args))
    finally:
        torch.set_num_threads(before)
    record = results.provenance("benchmark_compiled_steps", command="python benchmarks/compiled_steps.py "
                                + " ".join(argv if argv is not None else sys.argv[1:]),
                                mode="tiny" if args.tiny else ("quick" if args.quick else "full"), seed=0,
                                device=torch.device("cpu"))
    record.update(metrics=metrics, wall_seconds=time.perf_counter() - began,
                  config={"threads": args.threads, "configurations": names, "backend": args.backend,
                          "conv_tasks": args.conv_tasks, "repeats": args.repeats, "block_seconds": args.block})
    if args.out:
        print(f"wrote {results.write(record, args.out)}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
