"""Peak memory and time of one second-order MAML meta-iteration against inner steps and task-batch size, and
what the options that bound the memory cost in time.

One meta-iteration is ``zero_grad`` + ``MAML(...).meta_loss(batch, loss_fn)`` + ``loss.backward()`` (no
optimizer step), for two models:

* ``mlp``: ``sinusoid_mlp()`` (1-40-40-1), sinusoid tasks of 10 support + 10 query points, alpha 0.01 (MAML §5.1);
* ``conv4``: ``Conv4(5, strided=True, bn="batch")`` (MAML's Omniglot net, the constructor of
  ``benchmarks/meta_execution.py``), 5-way 1-shot tasks with 5 queries per class, alpha 0.4, random 1x28x28
  images (time and memory do not depend on pixel values).

Three sweeps per model, all second-order MAML with ``execution="vmap"`` (every task in one graph) unless named:

* inner steps 1, 2, 5, 10 at a fixed task batch (25 tasks for the MLP, 32 for Conv-4);
* task batch 4, 8, 16, 32, 64 at 5 inner steps;
* at the fixed batch and 5 steps, the options that bound memory: ``chunk8`` / ``chunk4`` (vmap over chunks of
  8 / 4 tasks, one backward per chunk, :mod:`mapping.meta.chunked`), ``first_order`` (FOMAML: the inner
  gradients are constants), ``checkpoint`` (each inner step recomputed in the backward instead of stored,
  :mod:`mapping.meta.recompute`) and ``checkpoint_chunk8``. Each is reported beside plain ``vmap``: ratios of
  peak MiB and of ms, and the relative distance of its float32 meta-gradient from vmap's (not for first_order,
  which differs by design).

Time: all the points of one model run side by side in this process, after a warm-up iteration each, interleaved
round-robin over ``--repeats`` rounds of blocks of about ``--block`` seconds (:func:`mapping.timing.
time_interleaved`); median ms per iteration. Peak memory, on one thread: the profiler method of
``benchmarks/meta_execution.py`` (imported from it, and checked first on known allocations there): the largest
running sum of torch's CPU allocator events during one iteration, beyond what was live before it.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mapping import results
from mapping.meta import MAML
from mapping.nn import Conv4, sinusoid_mlp
from mapping.timing import time_interleaved


def _sibling(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


meta_execution = _sibling("meta_execution")
peak_mib, validate_memory, grad_error = meta_execution.peak_mib, meta_execution.validate_memory, \
    meta_execution.grad_error
MODELS = ("mlp", "conv4")
# model -> fixed task batch, task-batch sweep, steps sweep, steps of the task sweep and the options, chunk sizes
FULL = {"mlp": (25, (4, 8, 16, 32, 64), (1, 2, 5, 10), 5, (8, 4)),
        "conv4": (32, (4, 8, 16, 32, 64), (1, 2, 5, 10), 5, (8, 4))}
TINY = {"mlp": (8, (2, 4, 8), (1, 2, 3), 2, (4, 2)), "conv4": (8, (2, 4, 8), (1, 2, 3), 2, (4, 2))}


def options(chunks: tuple[int, int]) -> dict[str, tuple[str, int, bool, bool]]:
    """label -> (execution, chunk_size, first_order, checkpoint) of each way to run the fixed configuration."""
    big, small = chunks
    return {"vmap": ("vmap", big, False, False), f"chunk{big}": ("chunk", big, False, False),
            f"chunk{small}": ("chunk", small, False, False), "first_order": ("vmap", big, True, False),
            "checkpoint": ("vmap", big, False, True), f"checkpoint_chunk{big}": ("chunk", big, False, True)}


def model_spec(name: str, tiny: bool) -> tuple:
    """(model factory, batch of a given number of tasks, loss, alpha, description) of ``name``."""
    if name == "mlp":
        shots = 5 if tiny else 10
        return (sinusoid_mlp, lambda tasks, seed: meta_execution.sinusoid_batch(tasks, shots, seed), F.mse_loss,
                0.01, f"1-40-40-1, sinusoid tasks x {shots}+{shots} points")
    filters, queries = (8, 1) if tiny else (64, 5)
    return (lambda: Conv4(5, hidden=filters, strided=True, bn="batch"),
            lambda tasks, seed: meta_execution.omniglot_batch(tasks, 5, 1, queries, seed), F.cross_entropy, 0.4,
            f"Conv-4 ({filters} filters, batch statistics), 5-way 1-shot {queries} queries per class, random 1x28x28")


def points(sizes: tuple) -> list[tuple[int, int, str]]:
    """Every (inner steps, tasks, option label) measured for one model, each once."""
    tasks, task_sweep, step_sweep, steps, chunks = sizes
    pts = [(s, tasks, "vmap") for s in step_sweep] + [(steps, t, "vmap") for t in task_sweep]
    pts += [(steps, tasks, label) for label in options(chunks)]
    return list(dict.fromkeys(pts))


def key(model: str, steps: int, tasks: int, label: str) -> str:
    return f"{model}/steps{steps}/tasks{tasks}/{label}"


def run_model(name: str, sizes: tuple, args) -> dict[str, dict]:
    """key -> {"ms", "peak_mib", "grad_err"} of every point of one model."""
    make_model, make_batch, loss_fn, alpha, _ = model_spec(name, args.tiny)
    torch.manual_seed(args.seed)
    model, opts = make_model(), options(sizes[4])
    batches = {t: make_batch(t, args.seed) for t in {p[1] for p in points(sizes)}}
    fns, grads = {}, {}
    for steps, tasks, label in points(sizes):
        execution, chunk, first_order, checkpoint = opts[label]
        maml = MAML(model, alpha, steps, first_order=first_order, execution=execution, chunk_size=chunk,
                    checkpoint=checkpoint)

        def step(maml=maml, batch=batches[tasks]):
            maml.zero_grad(set_to_none=True)
            maml.meta_loss(batch, loss_fn).backward()
        k = key(name, steps, tasks, label)
        fns[k] = step
        step()  # warm-up; its meta-gradient is compared with vmap's
        grads[k] = [p.grad.clone() for p in model.parameters()]
    ms = time_interleaved(fns, args.repeats, args.block)
    rows = {}
    for (steps, tasks, label), k in zip(points(sizes), fns):
        plain = key(name, steps, tasks, "vmap")
        rows[k] = {"ms": ms[k], "peak_mib": peak_mib(fns[k]),
                   "grad_err": None if label == "first_order" else grad_error(grads[k], grads[plain])}
    return rows


def metrics_of(rows: dict[str, dict]) -> dict[str, float]:
    """Flat metrics; the options also get their ratios to plain vmap at the same steps and tasks."""
    metrics = {}
    for k, r in rows.items():
        metrics.update({f"{k}/ms_per_iter": round(r["ms"], 3), f"{k}/peak_mib": round(r["peak_mib"], 3)})
        if r["grad_err"] is not None and not k.endswith("/vmap"):
            metrics[f"{k}/grad_rel_err"] = r["grad_err"]
        plain = rows[k.rsplit("/", 1)[0] + "/vmap"]
        if not k.endswith("/vmap"):
            metrics.update({f"{k}/ms_vs_vmap": round(r["ms"] / plain["ms"], 3),
                            f"{k}/peak_vs_vmap": round(r["peak_mib"] / plain["peak_mib"], 3)})
    return metrics


def table(rows: dict[str, dict]) -> str:
    lines = ["| model/steps/tasks/option | ms/iter | peak MiB | grad err vs vmap |", "|---|---:|---:|---:|"]
    for k, r in rows.items():
        err = "" if r["grad_err"] is None or k.endswith("/vmap") else f"{r['grad_err']:.1e}"
        lines.append(f"| {k} | {r['ms']:.2f} | {r['peak_mib']:.2f} | {err} |")
    return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for the timing (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--block", type=float, default=0.25, help="seconds per timed block (at least 1 iteration)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="which models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 round of 1-iteration blocks, for a smoke run")
    parser.add_argument("--tiny", action="store_true", help="small models, batches and sweeps, for the test suite")
    parser.add_argument("--out", default=None, help="also write <out>/<name>.json with provenance (e.g. results)")
    parser.add_argument("--name", default="benchmark_maml_memory", help="record name")
    args = parser.parse_args(argv)
    args.repeats, args.block = (1, 0.0) if args.quick else (args.repeats, args.block)
    return args


def main(argv=None) -> dict:
    began, args = time.perf_counter(), parse(argv)
    torch.set_num_threads(args.threads)
    validation = validate_memory(peak_mib)
    sizes = TINY if args.tiny else FULL
    rows = {k: r for name in args.models for k, r in run_model(name, sizes[name], args).items()}
    print(f"One second-order MAML meta-iteration (meta_loss + backward), median of {args.repeats} interleaved "
          f"rounds; torch {torch.__version__}, {torch.get_num_threads()} thread(s); peak memory by the profiler "
          f"(known allocations of 32 and 40 MiB read as {validation}).\n")
    print(table(rows))
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    record = results.provenance(args.name, command="python benchmarks/maml_memory.py "
                                + " ".join(argv if argv is not None else sys.argv[1:]),
                                mode=mode, seed=args.seed, device=torch.device("cpu"))
    fields = ("tasks", "task_sweep", "step_sweep", "steps", "chunks")
    record.update(metrics=metrics_of(rows), wall_seconds=time.perf_counter() - began,
                  config={"threads": torch.get_num_threads(), "repeats": args.repeats, "block_seconds": args.block,
                          "models": {n: {"description": model_spec(n, args.tiny)[4], **dict(zip(fields, sizes[n])),
                                         "options": options(sizes[n][4])} for n in args.models},
                          "memory_method": meta_execution.MEMORY_METHODS["profiler"],
                          "memory_validation_mib": validation})
    if args.out:
        print(f"wrote {results.write(record, args.out)}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
