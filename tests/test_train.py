"""The training loop: resume is exact, checkpoints are atomic and weights-only, bad losses stop it."""
import math

import pytest
import torch

from mapping import checkpoint
from mapping.experiments.sinusoid import SinusoidConfig, meta_train
from mapping.train import train


def make_run(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(seed)

    def step(_):
        x = torch.randn(8, 3, generator=gen)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}
    return model, opt, gen, step


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path):
    model, opt, gen, step = make_run()
    full = train(step, 40, state={"m": model, "o": opt, "g": gen}, progress=False)
    reference = [p.detach().clone() for p in model.parameters()]

    path = tmp_path / "run.pt"
    model, opt, gen, step = make_run()
    train(step, 25, state={"m": model, "o": opt, "g": gen}, checkpoint=path, checkpoint_every=5, progress=False)
    model, opt, gen, step = make_run(seed=123)  # a fresh process would start from other weights
    resumed = train(step, 40, state={"m": model, "o": opt, "g": gen}, checkpoint=path, progress=False)
    for a, b in zip(model.parameters(), reference):
        assert torch.equal(a.detach(), b)
    assert resumed["train"] == full["train"]
    assert full["train"][-1]["loss"] < full["train"][0]["loss"] / 10  # and it learned


def test_non_finite_loss_stops_with_the_iteration_and_keeps_the_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    model, opt, gen, step = make_run()
    train(step, 10, state={"m": model}, checkpoint=path, progress=False)
    before = path.read_bytes()

    def bad(it):
        return {"loss": math.nan if it == 13 else 1.0}
    with pytest.raises(FloatingPointError, match="not finite .* at iteration 13"):
        train(bad, 20, state={"m": model}, checkpoint=path, checkpoint_every=100, progress=False)
    assert path.read_bytes() == before


def test_checkpoint_state_mismatch_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    model, opt, gen, step = make_run()
    train(step, 2, state={"m": model}, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="holds state"):
        train(step, 4, state={"m": model, "o": opt}, checkpoint=path, progress=False)


def test_checkpoints_are_atomic_and_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    checkpoint.save({"w": torch.ones(3)}, path)

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left

    class Evil:
        def __reduce__(self):
            return (print, ("arbitrary code",))
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a readable weights-only checkpoint"):
        checkpoint.load(tmp_path / "evil.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="trunc.pt"):
        checkpoint.load(tmp_path / "trunc.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        checkpoint.load(tmp_path / "missing.pt")


def test_sinusoid_meta_training_resumes_bit_exactly(tmp_path):
    config = SinusoidConfig(iterations=30, meta_batch=4, methods=("maml",))
    straight, _ = meta_train("maml", config, progress=False)
    short = SinusoidConfig(iterations=12, meta_batch=4, methods=("maml",))
    meta_train("maml", short, checkpoint=tmp_path / "m.pt", progress=False)
    resumed, _ = meta_train("maml", config, checkpoint=tmp_path / "m.pt", progress=False)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_fewer_iterations_than_the_checkpoint_holds_is_refused_and_loses_nothing(tmp_path):
    model, opt, gen, step = make_run()
    path = tmp_path / "run.pt"
    train(step, 6, state={"m": model, "o": opt, "g": gen}, checkpoint=path, progress=False)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"iterations=4 is fewer than the 6 iterations that checkpoint="):
        train(step, 4, state={"m": model, "o": opt, "g": gen}, checkpoint=path, progress=False)
    assert path.read_bytes() == before
    again = train(step, 6, state={"m": model, "o": opt, "g": gen}, checkpoint=path, progress=False)
    assert len(again["train"]) == 6  # the finished run is returned as saved


def test_training_seconds_add_up_over_a_resumed_run(tmp_path):
    """history["seconds"] counts the time spent in the iterations, and a resumed run adds the earlier part's."""
    import time
    model, opt, gen, step = make_run()

    def slow(it):
        time.sleep(0.01)
        return step(it)
    path = tmp_path / "run.pt"
    first = train(slow, 20, state={"m": model, "o": opt, "g": gen}, checkpoint=path, checkpoint_every=5,
                  progress=False)
    assert 0.2 <= first["seconds"] < 5
    resumed = train(slow, 30, state={"m": model, "o": opt, "g": gen}, checkpoint=path, progress=False)
    assert first["seconds"] + 0.1 <= resumed["seconds"] < first["seconds"] + 5
    again = train(slow, 30, state={"m": model, "o": opt, "g": gen}, checkpoint=path, progress=False)
    assert again["seconds"] == resumed["seconds"]  # nothing left to do: the stored time, unchanged


@pytest.mark.slow
def test_sinusoid_methods_in_two_worker_processes_give_the_metrics_of_one_process():
    from mapping.experiments.sinusoid import run
    config = SinusoidConfig(iterations=20, meta_batch=4, eval_tasks=8, eval_query=10, eval_shots=(5,),
                            eval_steps=2, alpha_grid=(0.01, 0.03), methods=("fomaml", "pretrained"))
    serial, models, _ = run(config, progress=False)
    parallel, no_models, _ = run(config, progress=False, jobs=2, threads=1)
    assert set(models) == {"fomaml", "pretrained"} and no_models == {}
    assert parallel.keys() == serial.keys()
    for key, value in serial.items():
        if not key.endswith("_seconds"):
            assert parallel[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
