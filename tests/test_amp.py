"""Mixed precision (mapping.device.autocast): its errors, a bfloat16 MAML meta-step on Conv-4 against float32,
and amp=False leaving the float32 training unchanged, bit for bit.

No GPU here: the bfloat16 path runs under ``torch.autocast("cpu", dtype=torch.bfloat16)``, the same autocast
machinery that ``amp=True`` switches on for CUDA.
"""
import dataclasses
import hashlib
import json

import pytest
import torch
import torch.nn.functional as F

from mapping.data import TaskBatch
from mapping.device import autocast, grad_scaler
from mapping.experiments import omniglot_maml as om
from mapping.experiments import omniglot_metric as ometric
from mapping.meta import FOMAML, MAML
from mapping.nn import Conv4
from reference import relative_error


class FakeSplit:
    """Random 28x28 tasks in the shape of an OmniglotSplit's sampler: ``sampler(n, k, q).sample(tasks, g)``."""

    def sampler(self, n_way, k_shot, query):
        return self

    def __init__(self, n_way=5, k_shot=1, query=1):
        self.n_way, self.k_shot, self.query = n_way, k_shot, query

    def sample(self, tasks, generator):
        n, k, q = self.n_way, self.k_shot, self.query
        support = torch.rand(tasks, n * k, 1, 28, 28, generator=generator)  # (tasks, NK, 1, 28, 28)
        query_x = torch.rand(tasks, n * q, 1, 28, 28, generator=generator)  # (tasks, NQ, 1, 28, 28)
        labels = torch.arange(n)
        return TaskBatch(support, labels.repeat_interleave(k).repeat(tasks, 1), query_x,
                         labels.repeat_interleave(q).repeat(tasks, 1))


def test_autocast_errors_name_the_argument():
    with pytest.raises(ValueError, match="CUDA"):
        autocast("cpu", True)
    with pytest.raises(ValueError, match="enabled"):
        autocast("cpu", 1)
    with pytest.raises(ValueError, match="dtype"):
        autocast("cpu", False, dtype=torch.float64)
    with pytest.raises(ValueError, match="CUDA"):
        grad_scaler("cpu", True, torch.float16)
    with pytest.raises(ValueError, match="amp"):
        om.MamlConfig(amp="yes")


def test_autocast_off_computes_in_float32_and_the_scaler_passes_through():
    with autocast("cpu", False):
        out = torch.ones(2, 3) @ torch.ones(3, 2)  # (2, 2)
    assert out.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    assert not grad_scaler("cpu", False).is_enabled()


def test_fit_with_amp_on_the_cpu_raises_before_training():
    config = om.MamlConfig.for_mode("maml", "smoke", iterations=1, amp=True)
    with pytest.raises(ValueError, match="amp=True needs a CUDA device"):
        om.fit(config, FakeSplit(), "cpu", progress=False)


def conv4_grads(method, execution, bn, dtype=None):
    """Gradient of a float32 Conv-4 on 4 random 5-way 1-shot tasks, under CPU autocast if ``dtype``: the
    meta-gradient of ``method``, or with ``method=None`` the plain gradient of the query loss (no inner loop)."""
    torch.manual_seed(0)
    model = Conv4(5, hidden=16, bn=bn, strided=True)
    batch = FakeSplit(query=2).sample(4, torch.Generator().manual_seed(1))
    params = list(model.parameters())
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        if method is None:
            logits = model(batch.query_x.flatten(0, 1))  # (tasks * NQ, 5)
            loss = F.cross_entropy(logits, batch.query_y.flatten())
        else:
            learner = method(model, alpha=0.4, steps=1, execution=execution, chunk_size=2)
            loss = learner.meta_loss(batch, F.cross_entropy)
            params = list(learner.parameters())
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("execution", ["vmap", "chunk"])
@pytest.mark.parametrize("method", [MAML, FOMAML])
def test_bfloat16_meta_gradient_is_finite_and_as_close_to_float32_as_a_plain_gradient(method, execution):
    """bfloat16 keeps 8 significant bits (relative spacing 2^-8 = 0.4%). Without normalisation layers the
    meta-gradient's relative error against float32 stays within twice that of the plain gradient of the same
    network in bfloat16 (measured side by side) and within 10%; it is not zero, so autocast really ran."""
    loss32, grads32 = conv4_grads(method, execution, "none")
    loss16, grads16 = conv4_grads(method, execution, "none", torch.bfloat16)
    assert torch.isfinite(loss16) and all(torch.isfinite(g).all() for g in grads16)
    assert all(g.dtype == torch.float32 for g in grads16)  # the parameters and their gradients stay float32
    torch.testing.assert_close(loss16, loss32, rtol=1e-2, atol=0)
    plain = relative_error(conv4_grads(None, execution, "none", torch.bfloat16)[1],
                           conv4_grads(None, execution, "none")[1])
    error = relative_error(grads16, grads32)
    assert 0 < error <= min(2 * plain, 0.1)


def test_bfloat16_meta_gradient_through_batch_statistics_is_finite():
    """Per-call batch norm (the Omniglot experiment's ``bn="batch"``) in bfloat16: loss and meta-gradient finite
    and the loss within 1% of float32's. (Its gradient is much further from float32's than without the norm,
    hence amp stays off by default.)"""
    loss32, _ = conv4_grads(MAML, "vmap", "batch")
    loss16, grads16 = conv4_grads(MAML, "vmap", "batch", torch.bfloat16)
    assert all(torch.isfinite(g).all() for g in grads16)
    torch.testing.assert_close(loss16, loss32, rtol=1e-2, atol=0)


@pytest.mark.parametrize("method", ["maml", "reptile"])
def test_fit_runs_its_meta_steps_under_autocast_when_amp_is_on(method, monkeypatch):
    """``fit`` with amp=True, its CUDA autocast swapped for CPU bfloat16: finite losses, parameters that differ
    from the float32 run's."""
    calls = []

    def cpu_autocast(device, enabled):
        calls.append(enabled)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)

    monkeypatch.setattr(om, "autocast", cpu_autocast)
    config = om.MamlConfig.for_mode(method, "smoke", iterations=2, meta_batch=2, chunk_size=2)
    runs = {amp: om.fit(dataclasses.replace(config, amp=amp), FakeSplit(), "cpu", progress=False)
            for amp in (False, True)}
    assert calls == [False, False, True, True]
    losses = torch.tensor([row["loss"] for row in runs[True][1]["train"]])  # (logged iterations,)
    assert len(losses) == 2 and torch.isfinite(losses).all()
    assert any(not torch.equal(a, b) for a, b in zip(runs[False][0].parameters(), runs[True][0].parameters()))


def test_maml_fit_without_amp_is_the_plain_float32_loop_bit_for_bit():
    """Two meta-steps of ``fit`` (amp=False) against the loop written out without any autocast."""
    config = om.MamlConfig.for_mode("maml", "smoke", iterations=2, meta_batch=2, chunk_size=2)
    learner, _ = om.fit(config, FakeSplit(), "cpu", progress=False)
    plain = om.build(config)
    optimizer = torch.optim.Adam(plain.parameters(), lr=config.meta_lr)
    tasks, split = torch.Generator().manual_seed(config.seed), FakeSplit()
    for _ in range(config.iterations):
        batch = split.sample(config.meta_batch, tasks)
        optimizer.zero_grad(set_to_none=True)
        loss = plain.meta_loss(batch, F.cross_entropy)
        loss.backward()
        optimizer.step()
    for a, b in zip(learner.parameters(), plain.parameters()):
        assert torch.equal(a, b)


def test_metric_fit_without_amp_is_the_plain_float32_loop_bit_for_bit():
    config = ometric.MetricConfig.for_mode("protonet", mode="smoke", episodes=2, train_way=5, hidden=8)
    split = FakeSplit(5, config.train_shot, config.train_query)
    model, _ = ometric.fit(config, {"train": split}, "cpu", progress=False)
    torch.manual_seed(config.seed)
    plain = ometric.build(config)
    optimizer = torch.optim.Adam(plain.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.episodes):
        plain.train()
        loss = plain.meta_loss(split.sample(1, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)


def old_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def test_checkpoint_names_leave_amp_out_when_it_is_off(monkeypatch, tmp_path):
    """A float32 run resumes the checkpoint it wrote before ``amp`` existed; an amp run gets its own."""
    config = om.MamlConfig.for_mode("maml", "smoke")
    before = {k: v for k, v in dataclasses.asdict(config).items() if k not in om.TEST_FIELDS + ("amp",)}
    assert om.checkpoint_key(config) == old_key(before)
    assert om.checkpoint_key(dataclasses.replace(config, amp=True)) != old_key(before)

    seen = []

    def stop(config, data, device, checkpoint, progress):
        seen.append(checkpoint.name)
        raise StopIteration

    monkeypatch.setattr(ometric, "fit", stop)
    metric = ometric.MetricConfig.for_mode("protonet", mode="smoke")
    for amp in (False, True):
        with pytest.raises(StopIteration):
            ometric.run_one(dataclasses.replace(metric, amp=amp), "cpu", tmp_path, data={})
    fields = {k: v for k, v in dataclasses.asdict(metric).items() if k != "amp"}
    assert seen[0] == f"omniglot-protonet-{old_key(fields)}.pt" and seen[1] != seen[0]
