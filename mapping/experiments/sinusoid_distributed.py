"""Sinusoid meta-training (Finn et al. 2017, §5.1) with the meta-batch split over processes.

    torchrun --nproc_per_node 2 -m mapping.experiments.sinusoid_distributed --iterations 2000
    python -m mapping.experiments.sinusoid_distributed --iterations 2000      # one process, the same result

Every rank draws the same global batch from the same seeded generator, keeps its slice
(:func:`mapping.meta.shard`), back-propagates the mean loss of its own tasks, and all-reduces the
meta-gradients weighted by task counts (:func:`mapping.meta.all_reduce_meta_grads`), so every rank takes the
Adam step of the whole batch and the replicas stay equal: the trained model does not depend on the number of
processes (up to floating-point summation order).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data import Sinusoid
from ..meta import DistributedContext, all_reduce_mean, all_reduce_meta_grads, init_from_env, shard
from .sinusoid import SinusoidConfig, build, curve, eval_tasks

DISTRIBUTED_METHODS = ("maml", "fomaml", "metasgd", "anil", "reptile")


def train_distributed(method: str, config: SinusoidConfig, context: DistributedContext,
                      dtype: torch.dtype = torch.float32) -> tuple[nn.Module, list[float]]:
    """Meta-train ``method`` for ``config.iterations`` Adam steps on this rank's shards of the global batches.

    Returns the model (equal on every rank) and the global meta-loss of each iteration (every rank's list is
    the same: the losses are all-reduced with the task counts as weights, once at the end; every rank has the
    same number of tasks in each iteration)."""
    if method not in DISTRIBUTED_METHODS:
        raise ValueError(f"method must be one of {DISTRIBUTED_METHODS}, got {method!r}")
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build(method, config).to(context.device, dtype)
    tasks = Sinusoid.maml()
    generator = torch.Generator().manual_seed(config.seed)  # the same global batches on every rank
    optimizer = torch.optim.Adam(model.parameters(), lr=config.meta_lr)
    losses = []
    for _ in range(config.iterations):
        batch = tasks.sample(config.meta_batch, config.k_shot, config.q_query, generator)  # (tasks, shots, 1)
        local = shard(batch, context.rank, context.world_size).to(context.device, dtype)  # (local tasks, shots, 1)
        optimizer.zero_grad(set_to_none=True)
        if method == "reptile":
            loss = model.meta_loss(local, F.mse_loss)
            loss.backward()
        else:
            loss = model.meta_loss(local, F.mse_loss)
            loss.backward()
        all_reduce_meta_grads(model.parameters(), local.num_tasks, batch.num_tasks)
        optimizer.step()
        losses.append(loss.detach())
    return model, all_reduce_mean(torch.stack(losses), local.num_tasks).tolist()  # one collective for all losses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--method", choices=DISTRIBUTED_METHODS, default="maml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                        help="default: nccl with CUDA, else gloo")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda with the nccl backend, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--out", type=Path, default=None, help="write the final metrics as JSON (rank 0)")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> dict[str, float] | None:
    """Train, then report the final global loss and the validation MSE after one step from rank 0."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    backend = args.backend or ("gloo" if args.device == "cpu" else None)
    context = init_from_env(backend)
    if args.device == "cuda" and context.device.type != "cuda":
        raise ValueError("--device cuda needs the nccl backend (--backend nccl) and a GPU")
    config = SinusoidConfig(iterations=args.iterations, seed=args.seed)
    try:
        tic = time.perf_counter()
        model, losses = train_distributed(args.method, config, context)
        seconds = time.perf_counter() - tic
        if context.rank != 0:
            return None
        validation = eval_tasks(SinusoidConfig(eval_tasks=100, seed=config.seed), config.k_shot, context.device,
                                offset=30_000)
        metrics = {"final_loss": losses[-1], "val_mse_step1": curve(args.method, model, validation, 1,
                                                                     check=False)[:, 1].mean().item(),
                   "train_seconds": seconds, "world_size": context.world_size, "iterations": config.iterations}
        print(json.dumps({"method": args.method, **metrics}))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"method": args.method, "backend": context.backend, **metrics}, indent=1))
        return metrics
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()


__all__ = ["DISTRIBUTED_METHODS", "main", "parse_args", "train_distributed"]
