"""Meta-batch data parallelism (mapping.meta.distributed): two gloo processes end with the single-process
meta-gradient of the whole batch (MAML second order, Meta-SGD's rates, ANIL, Reptile, an uneven 5-over-2 split),
and Adam training on shards follows single-process training step for step."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from mapping.data import Sinusoid, TaskBatch
from mapping.experiments import sinusoid_distributed
from mapping.experiments.sinusoid import SinusoidConfig, build
from mapping.meta import ANIL, MAML, MetaSGD, Reptile, all_reduce_meta_grads, init_from_env, shard
from mapping.meta.distributed import shard_bounds
from mapping.nn import sinusoid_mlp

ROOT = Path(__file__).resolve().parents[1]
CASES = {"maml": (4, 2), "metasgd": (4, 1), "anil": (4, 2), "maml_uneven": (5, 1), "reptile": (5, 3)}  # tasks, steps
ADAM = SinusoidConfig(iterations=3, meta_batch=5, hidden=8, seed=3)  # 5 tasks over 2 ranks: uneven


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def learner(case: str) -> nn.Module:
    """A float64 tanh network (non-zero Hessian) wrapped by the case's meta-learner; the same on every rank."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    steps = CASES[case][1]
    return {"maml": lambda: MAML(net, alpha=0.1, steps=steps), "maml_uneven": lambda: MAML(net, 0.1, steps),
            "metasgd": lambda: MetaSGD(net, alpha=0.1, steps=steps),
            "anil": lambda: ANIL(net, alpha=0.1, steps=steps, head=["2.weight", "2.bias"]),
            "reptile": lambda: Reptile(net, alpha=0.1, steps=steps)}[case]()


def tasks(case: str) -> TaskBatch:
    g = torch.Generator().manual_seed(1)
    return Sinusoid.maml().sample(CASES[case][0], 4, 3, g, dtype=torch.float64)


def meta_grads(case: str, batch: TaskBatch, model: nn.Module) -> list[torch.Tensor]:
    """The case's meta-gradient of ``batch`` into ``model``'s ``.grad``; returns them (rates included)."""
    if case == "reptile":
        model.meta_loss(batch, F.mse_loss).backward()
    else:
        model.meta_loss(batch, F.mse_loss).backward()
    return [p.grad.clone() for p in model.parameters()]


def reference_training(config: SinusoidConfig) -> tuple[list[torch.Tensor], list[float]]:
    """Single-process float64 MAML with Adam on the whole batches (as sinusoid.meta_train's step)."""
    torch.manual_seed(config.seed)
    model = build("maml", config).double()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.meta_lr)
    losses = []
    for _ in range(config.iterations):
        batch = Sinusoid.maml().sample(config.meta_batch, config.k_shot, config.q_query, generator).to("cpu",
                                                                                                    torch.float64)
        optimizer.zero_grad()
        loss = model.meta_loss(batch, F.mse_loss)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return [p.detach() for p in model.parameters()], losses


def worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank: every case's all-reduced meta-gradient of its shard, and three Adam steps of the sinusoid loop."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    context = init_from_env("gloo")
    results = {"context": (context.rank, context.world_size, context.local_rank, str(context.device))}
    for case in CASES:
        batch, model = tasks(case), learner(case)
        local = shard(batch, rank, world_size)
        meta_grads(case, local, model)
        results[case] = (all_reduce_meta_grads(model.parameters(), local.num_tasks, batch.num_tasks),
                         [p.grad for p in model.parameters()])
    model, losses = sinusoid_distributed.train_distributed("maml", ADAM, context, torch.float64)
    results["adam"] = ([p.detach() for p in model.parameters()], losses)
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """What both ranks of one 2-process gloo run computed (one spawn for every test of this module)."""
    out = tmp_path_factory.mktemp("distributed")
    mp.spawn(worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")  # one spawn of two ranks serves them all
def test_each_rank_knows_its_place(two_ranks):
    assert [r["context"] for r in two_ranks] == [(0, 2, 0, "cpu"), (1, 2, 1, "cpu")]


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")  # one spawn of two ranks serves them all
@pytest.mark.parametrize("case", list(CASES))
def test_all_reduced_meta_gradient_is_the_single_process_one(two_ranks, case):
    """MAML (second order, 2 steps), Meta-SGD (rates too), ANIL (body and head), an uneven 3 + 2 split, Reptile."""
    expected = meta_grads(case, tasks(case), learner(case))
    for rank in two_ranks:
        count, grads = rank[case]
        assert count == CASES[case][0] and len(grads) == len(expected)
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    if case == "maml_uneven":  # plain averaging of the two shard means would not do
        halves = [meta_grads(case, shard(tasks(case), r, 2), learner(case)) for r in range(2)]
        naive = [(a + b) / 2 for a, b in zip(*halves)]
        assert not all(torch.allclose(n, e) for n, e in zip(naive, expected))
    if case == "metasgd":
        assert len(expected) > len(list(learner("maml").parameters()))  # the rates got their gradients


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")  # one spawn of two ranks serves them all
def test_adam_training_on_shards_follows_single_process_training(two_ranks):
    params, losses = reference_training(ADAM)
    for rank in two_ranks:
        got_params, got_losses = rank["adam"]
        for got, want in zip(got_params, params, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(torch.tensor(got_losses), torch.tensor(losses), rtol=1e-10, atol=0)
    assert torch.equal(two_ranks[0]["adam"][0][0], two_ranks[1]["adam"][0][0])  # replicas stay equal


@pytest.mark.slow
def test_torchrun_command_gives_the_one_process_loss(tmp_path, monkeypatch):
    """The README's command (2 processes under torchrun) and the plain one-process run give the same loss."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "two.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "mapping.experiments.sinusoid_distributed", "--iterations", "3", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads(out.read_text())
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    try:
        one = sinusoid_distributed.main(["--iterations", "3", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert (two["world_size"], one["world_size"]) == (2, 1)
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)
    assert two["val_mse_step1"] == pytest.approx(one["val_mse_step1"], rel=1e-5)


@pytest.mark.parametrize("tasks_, world", [(n, w) for n in range(1, 8) for w in range(1, n + 1)])
def test_shards_are_contiguous_cover_the_batch_and_differ_by_at_most_one(tasks_, world):
    batch = Sinusoid.maml().sample(tasks_, 2, 2, torch.Generator().manual_seed(0))
    parts = [shard(batch, r, world) for r in range(world)]
    for p, want in zip(parts, torch.tensor_split(batch.support_x, world)):
        assert torch.equal(p.support_x, want)
    assert torch.equal(torch.cat([p.query_y for p in parts]), batch.query_y)
    assert [shard_bounds(tasks_, r, world)[0] for r in range(world)] == [
        sum(p.num_tasks for p in parts[:r]) for r in range(world)]


@pytest.mark.parametrize("args, match", [((5, 2, 2), "rank must be in"), ((5, -1, 2), "rank must be"),
                                         ((5, 0, 0), "world_size must be"), ((1, 0, 2), "at least one task"),
                                         ((5, True, 2), "rank must be"), ((5, 0, 2.0), "world_size must be")])
def test_shard_rejects_bad_rank_and_world_size(args, match):
    batch = Sinusoid.maml().sample(args[0], 2, 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        shard(batch, *args[1:])
    with pytest.raises(ValueError, match="TaskBatch"):
        shard(batch.support_x, 0, 1)


def test_all_reduce_needs_a_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    with pytest.raises(ValueError, match="no torch.distributed process group"):
        all_reduce_meta_grads(nn.Linear(1, 1).parameters(), 1, 1)


@pytest.mark.parametrize("env, backend, match", [
    ({"RANK": "2", "WORLD_SIZE": "2"}, "gloo", "RANK must be in"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "gloo", "RANK must be an integer"),
    ({"WORLD_SIZE": "2"}, "gloo", "RANK is not set"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "gloo", "WORLD_SIZE must be"),
    ({}, "mpi", "backend must be one of"),
])
def test_init_from_env_rejects_bad_environments(monkeypatch, env, backend, match):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        init_from_env(backend)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_nccl_without_cuda_is_refused(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="nccl.*needs CUDA"):
        init_from_env("nccl")


def test_one_process_group_without_torchrun_keeps_the_gradient_and_checks_counts(monkeypatch):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_from_env()
    try:
        assert (context.rank, context.world_size, context.backend) == (0, 1, "gloo")
        model = learner("maml")
        expected = meta_grads("maml", tasks("maml"), model)
        assert all_reduce_meta_grads(model.parameters(), 4) == 4
        for p, want in zip(model.parameters(), expected):
            torch.testing.assert_close(p.grad, want, rtol=1e-15, atol=1e-15)
        with pytest.raises(ValueError, match="total_tasks=5"):
            all_reduce_meta_grads(model.parameters(), 4, 5)
        with pytest.raises(ValueError, match="local_tasks must be an int >= 1"):
            all_reduce_meta_grads(model.parameters(), 0)
        with pytest.raises(ValueError, match="no tensor that requires grad"):
            all_reduce_meta_grads([torch.zeros(2)], 1)
    finally:
        dist.destroy_process_group()


def test_readme_example_runs_alone_as_a_group_of_one(monkeypatch):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    section = (ROOT / "README.md").read_text().split("### Several processes, machines or GPUs", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)[0]
    scope = {"__name__": "readme"}
    exec(compile(code, "README.md", "exec"), scope)
    torch.manual_seed(0)
    untrained = MAML(sinusoid_mlp(40), alpha=0.01)
    assert not dist.is_initialized()
    assert scope["optimizer"].state[next(scope["maml"].parameters())]["step"] == 10
    assert not torch.equal(next(scope["maml"].parameters()), next(untrained.parameters()))
