"""Per-task gradients of T task losses w.r.t. a shared trunk: one batched backward against one backward per task.

Hard sharing: ``z = trunk(x)``, task t's loss reads z through its own head. Two trunks, sizes a multi-task user has:

* ``mlp``: 64 -> 256 -> 256 (ReLU), batch 256, heads ``Linear(256, 1)``, mean squared error (82k shared parameters);
* ``conv4``: ``Conv4(hidden=64, bn="batch")`` (4 blocks of 3x3 conv, batch-statistic norm, ReLU, max-pool; a
  64-dim embedding), batch 64 of random 1x28x28 images, heads ``Linear(64, 10)``, cross-entropy (112k shared).

Routes, each computing the Jacobian (T, P) of the losses w.r.t. the trunk's parameters from one retained forward
graph (the forward is timed apart, ``forward_ms``):

* ``loop``: ``task_jacobian(list_of_losses, trunk, one_pass=False)``: one ``torch.autograd.grad`` per task, each loss
  differentiated alone (the baseline);
* ``one_pass``: ``task_jacobian(torch.stack(losses), trunk)``: one ``autograd.grad`` with ``is_grads_batched=True``
  (vmap over the vector-Jacobian product);
* ``two_stage``: the gradients w.r.t. z task by task (through the heads only), then one batched vector-Jacobian
  product from z to the trunk (no head sees the other tasks' cotangents);
* ``features`` (not a Jacobian: what ``mtl_backward(..., features=z)`` costs): the Jacobian w.r.t. z in one pass
  and one backward of ``sum_i w_i L_i`` (Mean's weights), i.e. the aggregated gradient of MGDA-UB-style methods;
  ``features_loop``: the same with the Jacobian w.r.t. z task by task (``one_pass=False``).

Every route is checked against the loop before timing (float32: relative error of J, or of ``w^T J`` for
``features``, below 1e-5), else the script aborts. Time: the routes of one (trunk, T) run side by side in this
process after a warm-up call each, interleaved round-robin (the first one rotates) over ``--repeats`` rounds of blocks
of about ``--block`` seconds; the median ms per call is reported. ``--threads`` may list several thread counts,
measured one after the other in the same process. The aggregators' own cost (weights from a (T, T) Gramian) is timed
too.

How much faster any exact route could be. Every exact route computes the same T vector-Jacobian products through
the trunk; ``torch.utils.flop_counter.FlopCounterMode`` counts their floating-point operations in the loop (matrix
products and convolution backward), and one large matrix product (1024 x 1024, same process and thread count) gives
the rate this CPU's BLAS reaches at best. ``speedup_bound`` = loop time / (GFLOP / that rate): the speed-up over the
loop of a route that ran every product at the large-matrix rate with no other cost. Where it is below 2, no exact
route, batched or not, can be twice as fast as the loop on this machine. ``python benchmarks/multitask_grads.py --help`` lists the options.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mapping import results
from mapping.timing import time_interleaved
from mapping.multitask.aggregators import CAGrad, IMTLG, MGDA, Mean, PCGrad, UPGrad
from mapping.multitask.jacobian import task_jacobian
from mapping.nn import Conv4

ROUTES = ("loop", "one_pass", "two_stage", "features", "features_loop")
AGGREGATORS = {"Mean": Mean, "PCGrad": lambda: PCGrad(seed=0), "MGDA": MGDA, "CAGrad": CAGrad, "UPGrad": UPGrad,
               "IMTLG": IMTLG}


def make_problem(trunk_name: str, tasks: int, tiny: bool, seed: int):
    """(trunk, heads, x, targets, loss_fn, description) for one trunk and T tasks; random data."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if trunk_name == "mlp":
        width, batch, d_in = (32, 16, 8) if tiny else (256, 256, 64)
        trunk = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(tasks))
        x = torch.randn(batch, d_in, generator=g)  # (batch, d_in)
        ys = torch.randn(tasks, batch, 1, generator=g)  # (T, batch, 1)
        description = f"MLP {d_in}-{width}-{width} ReLU, batch {batch}, Linear({width}, 1) heads"
        return trunk, heads, x, ys, F.mse_loss, description
    filters, batch, side = (8, 8, 28) if tiny else (64, 64, 28)
    trunk = Conv4(hidden=filters, bn="batch", image_size=side)
    heads = nn.ModuleList(nn.Linear(trunk.embedding_dim, 10) for _ in range(tasks))
    x = torch.rand(batch, 1, side, side, generator=g)  # (batch, 1, side, side)
    ys = torch.randint(0, 10, (tasks, batch), generator=g)  # (T, batch)
    description = (f"Conv-4 ({filters} filters, batch-stat norm, max-pool), batch {batch} of 1x{side}x{side}, "
                   f"Linear({trunk.embedding_dim}, 10) heads")
    return trunk, heads, x, ys, F.cross_entropy, description


def forward(trunk, heads, x, ys, loss_fn):
    z = trunk(x)  # (batch, features)
    return z, [loss_fn(h(z), y) for h, y in zip(heads, ys)]  # T scalars


def flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten(1) for g in grads], dim=1)  # (T, P)


def make_routes(z, losses, shared):
    stacked = torch.stack(losses)  # (T,)
    T = len(losses)

    def loop():
        return task_jacobian(losses, shared, one_pass=False)

    def one_pass():
        return task_jacobian(stacked, shared)

    def two_stage():
        Jz = torch.stack([torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in losses])  # (T, *z.shape)
        return flat(torch.autograd.grad(z, shared, grad_outputs=Jz, retain_graph=True, is_grads_batched=True))

    def features(one_pass=True):
        Jz = task_jacobian(losses, z, one_pass=one_pass)  # (T, batch * features)
        w = Mean().weights(Jz @ Jz.T)  # (T,)
        return torch.cat([g.flatten() for g in torch.autograd.grad(stacked, shared, grad_outputs=w,
                                                                   retain_graph=True)])  # (P,)
    return {"loop": loop, "one_pass": one_pass, "two_stage": two_stage, "features": features,
            "features_loop": lambda: features(False)}, T


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def run_case(trunk_name: str, tasks: int, args) -> dict:
    trunk, heads, x, ys, loss_fn, description = make_problem(trunk_name, tasks, args.tiny, args.seed)
    shared = list(trunk.parameters())
    z, losses = forward(trunk, heads, x, ys, loss_fn)
    routes, T = make_routes(z, losses, shared)
    ref = routes["loop"]()  # (T, P)
    errors = {"one_pass": rel_err(routes["one_pass"](), ref), "two_stage": rel_err(routes["two_stage"](), ref),
              "features": rel_err(routes["features"](), ref.mean(0)),
              "features_loop": rel_err(routes["features_loop"](), ref.mean(0))}
    if max(errors.values()) > 1e-5:
        sys.exit(f"ABORT: a route disagrees with the per-task loop on {trunk_name}, T={tasks}: {errors}")
    with FlopCounterMode(display=False) as counter:  # the arithmetic of T vector-Jacobian products
        routes["loop"]()
    ms = time_interleaved(routes, args.repeats, args.block)
    ms["forward"] = time_interleaved({"forward": lambda: forward(trunk, heads, x, ys, loss_fn)}, args.repeats,
                                     args.block)["forward"]
    return {"trunk": trunk_name, "T": tasks, "ms": ms, "errors": errors, "P": ref.shape[1],
            "gflop": counter.get_total_flops() / 1e9,
            "description": description, "gramian": (ref.double() @ ref.double().T)}


def peak_gflops(args) -> float:
    """GFLOP/s of one large float32 matrix product (1024 x 1024), median of interleaved blocks: what this CPU's
    BLAS reaches at best with the current thread count."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    ms = time_interleaved({"mm": lambda: a @ b}, args.repeats, args.block)["mm"]
    return 2 * 1024 ** 3 / ms / 1e6


def bound(row: dict, peak: float) -> tuple[float, float]:
    """The loop's GFLOP/s, and the largest speed-up over it of any route doing the same arithmetic (the T
    vector-Jacobian products) at ``peak`` GFLOP/s: loop time / (GFLOP / peak)."""
    achieved = row["gflop"] / row["ms"]["loop"] * 1e3
    return achieved, peak / achieved


def time_aggregators(gramians: dict[int, torch.Tensor], args) -> dict[str, float]:
    out = {}
    for T, G in gramians.items():
        fns = {name: (lambda make=make: make().weights(G)) for name, make in AGGREGATORS.items()}
        for name, value in time_interleaved(fns, args.repeats, args.block / 4).items():
            out[f"{name}/T{T}"] = value
    return out


def table(rows: list[dict], threads: int, peak: float) -> str:
    lines = [f"threads = {threads}; one 1024x1024 matrix product: {peak:.0f} GFLOP/s", "",
             "| trunk | T | loop ms | one-pass ms | speed-up | two-stage ms | speed-up | features ms | "
             "features (loop) ms | forward ms | GFLOP of T VJPs | loop GFLOP/s | speed-up bound |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms = r["ms"]
        achieved, most = bound(r, peak)
        lines.append(f"| {r['trunk']} | {r['T']} | {ms['loop']:.2f} | {ms['one_pass']:.2f} | "
                     f"{ms['loop'] / ms['one_pass']:.2f}x | {ms['two_stage']:.2f} | "
                     f"{ms['loop'] / ms['two_stage']:.2f}x | {ms['features']:.2f} | {ms['features_loop']:.2f} | "
                     f"{ms['forward']:.2f} | {r['gflop']:.3f} | {achieved:.0f} | {most:.2f}x |")
    return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2],
                        help="torch.set_num_threads, one or more values measured in turn (default 2, the CI machine)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 10, 40], help="numbers of tasks T")
    parser.add_argument("--trunks", nargs="+", default=["mlp", "conv4"], choices=["mlp", "conv4"])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--block", type=float, default=0.3, help="seconds per timed block (at least 1 call)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 round of 1-call blocks, for a smoke run")
    parser.add_argument("--tiny", action="store_true", help="small trunks and batches, for the test suite")
    parser.add_argument("--out", default=None, help="also write <out>/<name>.json with provenance (e.g. results)")
    parser.add_argument("--name", default="benchmark_multitask_grads", help="record name")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    began = time.perf_counter()
    if args.quick:
        args.repeats, args.block = 1, 0.0
    metrics, models, load = {}, {}, {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        load[f"threads{threads}"] = os.getloadavg()[0]
        peak = peak_gflops(args)
        rows = [run_case(trunk, T, args) for trunk in args.trunks for T in args.tasks]
        print(table(rows, torch.get_num_threads(), peak) + "\n")
        metrics[f"peak_gflops/threads{threads}"] = round(peak, 1)
        for r in rows:
            key = f"{r['trunk']}/T{r['T']}/threads{threads}"
            models[r["trunk"]] = f"{r['description']}; {r['P']} shared parameters"
            metrics.update({f"{key}/{name}_ms": round(v, 3) for name, v in r["ms"].items()})
            metrics.update({f"{key}/speedup_{route}": round(r["ms"]["loop"] / r["ms"][route], 3)
                            for route in ROUTES[1:]})
            metrics.update({f"{key}/rel_err_{route}": e for route, e in r["errors"].items()})
            achieved, most = bound(r, peak)
            metrics.update({f"{key}/gflop": r["gflop"], f"{key}/loop_gflops": round(achieved, 1),
                            f"{key}/speedup_bound": round(most, 3)})
        gramians = {r["T"]: r["gramian"] for r in rows if r["trunk"] == rows[0]["trunk"]}
        agg = time_aggregators(gramians, args)
        metrics.update({f"aggregator/{k}/threads{threads}/ms": round(v, 3) for k, v in agg.items()})
        print("aggregator weights from the Gramian (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in agg.items()) + "\n")
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    record = results.provenance(args.name, command="python benchmarks/multitask_grads.py "
                                + " ".join(argv if argv is not None else sys.argv[1:]),
                                mode=mode, seed=args.seed, device=torch.device("cpu"))
    record.update(metrics=metrics, wall_seconds=time.perf_counter() - began,
                  config={"threads": args.threads, "tasks": args.tasks, "repeats": args.repeats,
                          "block_seconds": args.block, "models": models, "routes": list(ROUTES),
                          "dtype": "float32", "cpu_count": os.cpu_count(), "loadavg_1min_at_start": load,
                          "loadavg_1min_at_end": os.getloadavg()[0],
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (ACTIVE spin-wait)")})
    if args.out:
        print(f"wrote {results.write(record, args.out)}", file=sys.stderr)
    print(json.dumps(record, sort_keys=True))
    return record


if __name__ == "__main__":
    main()
