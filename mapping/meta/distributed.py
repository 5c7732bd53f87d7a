"""Meta-batch data parallelism: several processes share one task batch and end with its exact meta-gradient.

The meta-loss of a batch of ``N`` tasks is the mean of the per-task query losses (Finn et al. 2017, Algorithm 2,
line 10), so its gradient splits over a partition of the tasks into slices ``S_r`` of ``n_r`` tasks:

    grad (1/N) sum_i L_i = sum_r (n_r / N) grad (1/n_r) sum_{i in S_r} L_i

Each process (rank ``r``) takes its contiguous slice (:func:`shard`), computes the mean loss of its own tasks
and its backward, and :func:`all_reduce_meta_grads` sums ``n_r * grad_r`` over the processes and divides by
``N`` -- the gradient all-reduce of DistributedDataParallel (Li et al. 2020, PyTorch Distributed, VLDB), with the
weights that make uneven slices (5 tasks over 2 processes) exact. Reptile's ``.grad`` (``theta - mean_i
theta'_i``, a mean over tasks too) is reduced the same way. Every process then holds the single-process
meta-gradient of the whole batch, so the same optimizer step keeps the replicas equal.

Under ``torchrun`` (the README's section "Several processes" runs it whole; tests/test_distributed.py too)::

    context = init_from_env()                          # torchrun's RANK, WORLD_SIZE, LOCAL_RANK
    batch = tasks.sample(25, 10, 10, generator)        # the same global batch on every rank (same seed)
    local = shard(batch, context.rank, context.world_size).to(context.device)
    loss = maml.meta_loss(local, F.mse_loss); loss.backward()
    all_reduce_meta_grads(maml.parameters(), local.num_tasks, batch.num_tasks); optimizer.step()
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import Tensor

from ..checks import check_int
from ..data.tasks import TaskBatch

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the group: ``rank`` of ``world_size``, its ``local_rank`` on the machine, the
    ``device`` its tensors live on, and the ``backend`` of the process group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


def shard_bounds(tasks: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous slice of ``tasks`` tasks: the first ``tasks % world_size``
    ranks take one task more (as :func:`torch.tensor_split`)."""
    check_int("world_size", world_size, 1)
    check_int("rank", rank, 0)
    check_int("tasks", tasks, 1)
    if rank >= world_size:
        raise ValueError(f"rank must be in [0, world_size) = [0, {world_size}), got {rank}")
    if tasks < world_size:
        raise ValueError(f"the batch holds {tasks} tasks for world_size={world_size} processes; every process needs "
                         "at least one task, so sample at least world_size tasks")
    size, extra = divmod(tasks, world_size)
    start = rank * size + min(rank, extra)
    return start, start + size + (rank < extra)


def shard(batch: TaskBatch, rank: int, world_size: int) -> TaskBatch:
    """Rank ``rank``'s contiguous slice of ``batch`` (:func:`shard_bounds`), info tensors sliced alike."""
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"batch must be a mapping.data.TaskBatch, got {type(batch).__name__}")
    start, stop = shard_bounds(batch.num_tasks, rank, world_size)
    s = slice(start, stop)
    return replace(batch, support_x=batch.support_x[s], support_y=batch.support_y[s], query_x=batch.query_x[s],
                   query_y=batch.query_y[s],  # (local tasks, shots, ...)
                   info={k: v[s] if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in batch.info.items()})


def _require_group() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("no torch.distributed process group is initialised; call "
                         "mapping.meta.init_from_env() (under torchrun, or alone for one process) first")


def all_reduce_meta_grads(parameters: Iterable[Tensor], local_tasks: int, total_tasks: int | None = None) -> int:
    """Replace each parameter's ``.grad`` (the mean over this rank's ``local_tasks`` tasks) by the mean over all
    tasks of all ranks: ``sum_r n_r grad_r / N``, one flattened all-reduce per (device, dtype).

    Every rank must pass the same parameters in the same order. Parameters that require grad but have no
    ``.grad`` here count as zero (another rank may have one) and get the reduced gradient. ``total_tasks``, if
    given, is checked against the sum of ``local_tasks`` over the ranks (reduced with the gradients, at no
    extra collective); returns that sum ``N``.
    """
    _require_group()
    check_int("local_tasks", local_tasks, 1)
    if total_tasks is not None:
        check_int("total_tasks", total_tasks, 1)
    params = [p for p in parameters if isinstance(p, Tensor) and p.requires_grad]
    groups: dict[tuple, list[Tensor]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    if not groups:
        raise ValueError("parameters holds no tensor that requires grad; pass model.parameters()")
    reduced = None
    for (device, dtype), members in groups.items():
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in members]
        flat = torch.cat(grads + [torch.ones(1, device=device, dtype=dtype)]) * local_tasks  # (numel + 1,)
        dist.all_reduce(flat)  # sum over ranks: [sum_r n_r grad_r, N]
        reduced = int(round(flat[-1].item()))
        flat = flat[:-1] / reduced  # (numel,)
        for p, g in zip(members, flat.split([p.numel() for p in members])):
            if p.grad is None:
                p.grad = g.view_as(p).clone()
            else:
                p.grad.copy_(g.view_as(p))
    if total_tasks is not None and reduced != total_tasks:
        raise ValueError(f"local_tasks sums to {reduced} over the ranks but total_tasks={total_tasks}; each rank "
                         "must pass the size of its own shard of the same global batch")
    return reduced


def all_reduce_mean(value: Tensor, local_tasks: int) -> Tensor:
    """The mean over all tasks of a per-rank mean ``value`` (e.g. the local meta-loss), weighted as the
    gradients are; detached."""
    _require_group()
    check_int("local_tasks", local_tasks, 1)
    if not isinstance(value, Tensor):
        raise ValueError(f"value must be a torch.Tensor, got {type(value).__name__}")
    flat = torch.cat([value.detach().reshape(-1) * local_tasks, value.new_full((1,), float(local_tasks))])  # (n+1,)
    dist.all_reduce(flat)
    return (flat[:-1] / flat[-1]).view_as(value)


def _env_int(name: str, default: int | None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"environment variable {name} is not set; start with torchrun, which sets RANK, "
                             "WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _device(backend: str, local_rank: int) -> torch.device:
    if backend != "nccl":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("backend='nccl' needs CUDA, but torch.cuda.is_available() is False; use backend='gloo'")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} GPUs; "
                         "give torchrun --nproc_per_node at most the number of GPUs")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_from_env(backend: str | None = None) -> DistributedContext:
    """Initialise the process group from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) and return this process's :class:`DistributedContext`.

    ``backend`` defaults to ``"nccl"`` when CUDA is available, else ``"gloo"``; with NCCL the CUDA device is set
    from ``LOCAL_RANK``. Without torchrun's environment (``python -m ...``) it starts a group of one process on an
    in-memory store, so the same training code runs alone. A group that is already initialised is reused.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None (nccl with CUDA, else gloo), got {backend!r}")
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed")
    if dist.is_initialized():
        backend = dist.get_backend()
        local_rank = _env_int("LOCAL_RANK", 0)
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, _device(backend, local_rank),
                                  backend)
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    alone = "WORLD_SIZE" not in os.environ and "RANK" not in os.environ
    world_size = _env_int("WORLD_SIZE", 1 if alone else None)
    rank = _env_int("RANK", 0 if alone else None)
    local_rank = _env_int("LOCAL_RANK", 0 if alone else rank)
    check_int("WORLD_SIZE", world_size, 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE) = [0, {world_size}), got {rank}")
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK must be >= 0, got {local_rank}")
    device = _device(backend, local_rank)
    if alone:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    else:
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                **({"device_id": device} if backend == "nccl" else {}))
    return DistributedContext(rank, world_size, local_rank, device, backend)


__all__ = ["BACKENDS", "DistributedContext", "all_reduce_meta_grads", "all_reduce_mean", "init_from_env", "shard",
           "shard_bounds"]
