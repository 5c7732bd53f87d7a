"""Time one second-order MAML meta-iteration on sinusoid regression, four ways, in one process.

The setting is MAML's sinusoid experiment (Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for
Fast Adaptation of Deep Networks", §5.1): 25 tasks, K = 10 support and 10 query points per task, one inner
SGD step with alpha = 0.01, a 1-40-40-1 ReLU network, and an Adam meta-step (lr 1e-3). One iteration is
zero_grad + meta-loss + backward through the inner step + Adam step, implemented with

* ``mapping``: ``MAML.meta_loss``, the inner loop vmapped over tasks (torch.func), eager;
* ``compiled``: the same with ``MAML(..., compile=True)`` (mapping.meta.compiled; its compile time is
  reported apart, ``--no-compiled`` leaves it out);
* ``loop``:    a Python loop over tasks, ``torch.autograd.grad(create_graph=True)`` + ``functional_call``;
* ``higher``:  ``higher.innerloop_ctx`` per task, query loss backward inside the context (if installed).

All start from the same weights and see the same batches; their meta-gradients are checked to agree
before anything is timed. Run ``python benchmarks/maml_sinusoid.py --help`` for the options.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

from mapping import results
from mapping.data import Sinusoid
from mapping.device import device_name, get_device
from mapping.meta import MAML, compile_seconds
from mapping.nn import sinusoid_mlp

try:
    import higher
except Exception as error:  # ImportError, or an incompatibility with this torch version
    higher, HIGHER_ERROR = None, f"{type(error).__name__}: {error}"

TASKS, K, ALPHA, META_LR = 25, 10, 0.01, 1e-3
NAMES = ("mapping", "compiled", "loop", "higher")


def make_mapping(model, compile=False):
    """Implementation 1: the library's vmapped functional MAML (with ``compile``: implementation 2)."""
    maml = MAML(model, alpha=ALPHA, steps=1, execution="vmap", compile=compile)

    def backward(batch):
        maml.meta_loss(batch, F.mse_loss).backward()
    backward.learner = maml
    return backward


def make_compiled(model, backend="inductor"):
    return make_mapping(model, compile={"backend": backend})


def make_loop(model):
    """Implementation 2: one task at a time, the inner gradient kept in the graph."""
    def backward(batch):
        params = dict(model.named_parameters())
        losses = []
        for sx, sy, qx, qy in zip(*batch.tensors()):
            support = F.mse_loss(functional_call(model, params, (sx,)), sy)
            grads = torch.autograd.grad(support, list(params.values()), create_graph=True)
            fast = {k: p - ALPHA * g for (k, p), g in zip(params.items(), grads)}
            losses.append(F.mse_loss(functional_call(model, fast, (qx,)), qy))
        torch.stack(losses).mean().backward()
    return backward


def make_higher(model):
    """Implementation 3: higher's MAML recipe (its maml-omniglot example), averaged over tasks."""
    inner_opt = torch.optim.SGD(model.parameters(), lr=ALPHA)

    def backward(batch):
        for sx, sy, qx, qy in zip(*batch.tensors()):
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                diffopt.step(F.mse_loss(fmodel(sx), sy))
                (F.mse_loss(fmodel(qx), qy) / batch.num_tasks).backward()
    return backward


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200,
                        help="meta-iterations per timed block (long enough that a switch of implementation costs little)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per implementation")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default=None, help="default: mapping.device.get_device()")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny numbers, for a CI smoke run")
    parser.add_argument("--no-compiled", dest="compiled", action="store_false",
                        help="leave out the torch.compile implementation (it compiles for about 10-30 s)")
    parser.add_argument("--backend", default="inductor",
                        help="torch.compile backend of the compiled implementation (aot_eager: no code generation)")
    parser.add_argument("--out", default=None,
                        help="also write <out>/<name>.json with provenance (e.g. results)")
    parser.add_argument("--name", default="benchmark_maml_sinusoid",
                        help="record name, e.g. benchmark_maml_sinusoid_cuda for a GPU run")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    if args.quick:
        args.iterations, args.rounds, args.warmup = 2, 1, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    impls = {"mapping": make_mapping, "loop": make_loop}
    if args.compiled:
        impls = {"mapping": make_mapping, "compiled": lambda m: make_compiled(m, args.backend),
                 "loop": make_loop}
    if higher is not None:
        impls["higher"] = make_higher
    else:
        print(f"higher is not importable ({HIGHER_ERROR}); skipping it", file=sys.stderr)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    initial = sinusoid_mlp().to(device)
    batches = [Sinusoid().sample(TASKS, K, K, generator).to(device) for _ in range(args.iterations + 1)]

    # 1. Same weights, same batch -> the same meta-gradient (float32, rtol 1e-4).
    grads, compile_s = {}, None
    for name, make in impls.items():
        model = copy.deepcopy(initial)
        backward = make(model)
        backward(batches[0])  # the compiled implementation compiles here
        grads[name] = {k: p.grad for k, p in model.named_parameters()}
        if name == "compiled":
            compile_s = compile_seconds(backward.learner)
            if compile_s is None:
                sys.exit(f"ABORT: torch.compile fell back to eager ({backward.learner.compiled.error})")
    for name in impls:
        try:
            torch.testing.assert_close(grads[name], grads["mapping"], rtol=1e-4, atol=1e-5)
        except AssertionError as error:
            sys.exit(f"ABORT: the meta-gradient of '{name}' differs from mapping's on the same batch:\n{error}")
    print(f"meta-gradients agree (rtol 1e-4): {', '.join(impls)}")

    # 2. Time them interleaved; each implementation keeps its own model and Adam state.
    models = {name: copy.deepcopy(initial) for name in impls}
    opts = {name: torch.optim.Adam(models[name].parameters(), lr=META_LR, fused=True)  # one kernel, for all
            for name in impls}
    steps = {name: make(models[name]) for name, make in impls.items()}

    def run(name, batches):
        for batch in batches:
            opts[name].zero_grad()
            steps[name](batch)
            opts[name].step()

    for name in impls:
        run(name, batches[1:1 + args.warmup])
    times = {name: [] for name in impls}
    order = list(impls)
    for r in range(args.rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
            sync()
            start = time.perf_counter()
            run(name, batches[1:])
            sync()
            times[name].append(1000 * (time.perf_counter() - start) / args.iterations)

    ms = {name: statistics.median(t) for name, t in times.items()}
    threads = torch.get_num_threads()
    print(f"\nOne MAML meta-iteration, sinusoid ({TASKS} tasks, K={K}, 1 inner step), "
          f"median of {args.rounds} rounds x {args.iterations} iterations")
    print(f"device: {device_name(device)}   torch {torch.__version__}   threads {threads}\n")
    print(f"{'implementation':<16}{'ms/iter':>10}{'mapping speed-up':>20}")
    for name in NAMES:
        if name in ms:
            print(f"{name:<16}{ms[name]:>10.2f}{ms[name] / ms['mapping']:>19.2f}x")
        else:
            print(f"{name:<16}{'skipped':>10}{'-':>20}")
    if compile_s is not None:
        print(f"compiled: {compile_s:.1f} s to compile (first call), not in ms/iter; "
              + (f"{ms['higher'] / ms['compiled']:.1f}x faster than higher" if "higher" in ms else ""))
    per_iter = {n: (round(ms[n], 3) if n in ms else None) for n in NAMES}
    ratio = {n: (round(ms[n] / ms["mapping"], 3) if n in ms else None) for n in ("higher", "loop")}
    ratio_compiled = {n: (round(ms[n] / ms["compiled"], 3) if n in ms and "compiled" in ms else None)
                      for n in ("higher", "loop", "mapping")}
    if args.out:
        record = results.provenance(args.name, command="python benchmarks/maml_sinusoid.py "
                                    + " ".join(argv if argv is not None else sys.argv[1:]),
                                    mode="quick" if args.quick else "full", seed=args.seed, device=device)
        metrics = {f"{n}/ms_per_iter": v for n, v in per_iter.items() if v is not None}
        metrics.update({f"ratio_vs_{n}": v for n, v in ratio.items() if v is not None})
        metrics.update({f"compiled/ratio_vs_{n}": v for n, v in ratio_compiled.items() if v is not None})
        if compile_s is not None:
            metrics["compiled/compile_seconds"] = round(compile_s, 2)
        record.update(metrics=metrics, wall_seconds=time.perf_counter() - began,
                      config={"threads": threads, "iterations": args.iterations, "rounds": args.rounds,
                              "compiled_backend": args.backend if args.compiled else None})
        print(f"wrote {results.write(record, args.out)}", file=sys.stderr)
    print(json.dumps({"benchmark": "maml_sinusoid", "device": device_name(device), "torch": torch.__version__,
                      "threads": threads, "ms_per_iter": per_iter,
                      "ratio_vs_higher": ratio["higher"], "ratio_vs_loop": ratio["loop"],
                      "compiled_ratio_vs_higher": ratio_compiled["higher"], "compile_seconds": compile_s}))


if __name__ == "__main__":
    main()
