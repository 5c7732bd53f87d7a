"""Gradient checkpointing of the inner loop (``checkpoint=True``): the same meta-gradient as an independent
per-task float64 loop, less memory where the inner steps' graphs dominate, and clear errors."""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from benchmark_loader import load_benchmark
from mapping.data import Sinusoid, TaskBatch
from mapping.meta import ANIL, MAML, FOMAML, MetaSGD
from mapping.meta.functional import batched_inner_loop, functional
from mapping.nn import Conv4, sinusoid_mlp
from reference import reference_meta_loss

EXECUTIONS = ["vmap", "chunk", "loop"]


def sinusoid_batch(tasks=5, k=4, q=6, seed=0):
    return Sinusoid().sample(tasks, k, q, torch.Generator().manual_seed(seed), dtype=torch.float64)


def image_batch(tasks=3, ways=3, shots=2, size=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(tasks, 2 * ways * shots, 1, size, size, generator=g, dtype=dtype)  # (tasks, 2NK, 1, s, s)
    y = torch.arange(ways).repeat_interleave(shots).repeat(tasks, 2)  # (tasks, 2NK)
    half = ways * shots
    return TaskBatch(x[:, :half], y[:, :half], x[:, half:], y[:, half:])


def small_conv4(ways=3, size=12, hidden=4, seed=0):
    """Conv-4 normalising with batch statistics, affine parameters moved away from 1 / 0."""
    torch.manual_seed(seed)
    model = Conv4(ways, hidden=hidden, bn="batch", strided=True, image_size=size).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def meta_gradient(method, batch, loss_fn):
    method.zero_grad(set_to_none=True)
    method.meta_loss(batch, loss_fn).backward()
    return [p.grad.clone() for p in method.parameters()]


def reference_gradient(model, batch, loss_fn, steps, alpha):
    loss = reference_meta_loss(model, batch, loss_fn, steps=steps, alpha=alpha)
    return list(torch.autograd.grad(loss, list(model.parameters())))


def mlp_case():
    torch.manual_seed(0)
    return sinusoid_mlp(), sinusoid_batch(), F.mse_loss, 0.05


def conv4_case():
    return small_conv4(), image_batch(), F.cross_entropy, 0.4


@pytest.mark.parametrize("case", [mlp_case, conv4_case], ids=["mlp", "conv4_batch_norm"])
@pytest.mark.parametrize("execution", EXECUTIONS)
def test_checkpointed_maml_equals_a_per_task_loop_in_float64(float64, case, execution):
    model, batch, loss_fn, alpha = case()
    maml = MAML(model, alpha=alpha, steps=3, execution=execution, chunk_size=2, checkpoint=True)
    got = meta_gradient(maml, batch, loss_fn)
    assert_close(got, reference_gradient(model, batch, loss_fn, 3, alpha), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_checkpointed_metasgd_rates_and_weights_equal_a_per_task_loop_in_float64(float64, execution):
    torch.manual_seed(1)
    model, batch = sinusoid_mlp(), sinusoid_batch(seed=1)
    msgd = MetaSGD(model, alpha=0.05, steps=3, execution=execution, chunk_size=2, checkpoint=True)
    with torch.no_grad():  # rates that differ per entry, so that each rate's gradient is its own
        for rate in msgd.rates:
            rate.mul_(1 + 0.5 * torch.rand_like(rate))
    got = meta_gradient(msgd, batch, F.mse_loss)
    params, rates = list(model.parameters()), list(msgd.rates)
    loss = reference_meta_loss(model, batch, F.mse_loss, steps=3, alpha=dict(zip(msgd.rate_names, rates)))
    assert_close(got, list(torch.autograd.grad(loss, params + rates)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [FOMAML, ANIL])
def test_checkpoint_leaves_first_order_and_head_only_meta_gradients_unchanged(float64, cls):
    torch.manual_seed(2)
    model, batch = sinusoid_mlp(), sinusoid_batch(seed=2)
    extra = {"head": ["head.weight", "head.bias"]} if cls is ANIL else {}  # ANIL: the body is frozen
    plain = meta_gradient(cls(model, alpha=0.05, steps=3, execution="vmap", **extra), batch, F.mse_loss)
    for execution in EXECUTIONS:
        got = meta_gradient(cls(model, alpha=0.05, steps=3, execution=execution, checkpoint=True, **extra),
                            batch, F.mse_loss)
        assert_close(got, plain, rtol=1e-10, atol=1e-12)


def test_checkpointed_inner_losses_and_adapted_weights_equal_the_plain_ones(float64):
    torch.manual_seed(3)
    model, batch = sinusoid_mlp(), sinusoid_batch(seed=3)
    params = dict(model.named_parameters())
    outs = [batched_inner_loop(functional(model), F.mse_loss, params, *batch.tensors(), steps=3, alpha=0.05,
                               trace=True, execution="vmap", checkpoint=ck) for ck in (False, True)]
    assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-14)


def test_checkpointing_lowers_the_peak_memory_of_a_many_step_conv4_meta_iteration():
    bench = load_benchmark("maml_memory")
    torch.manual_seed(0)
    model = Conv4(5, hidden=16, bn="batch", strided=True)
    batch = image_batch(tasks=8, ways=5, shots=1, size=28, dtype=torch.float32)

    def iteration(checkpoint):
        maml = MAML(model, alpha=0.4, steps=5, execution="vmap", checkpoint=checkpoint)
        return lambda: maml.meta_loss(batch, F.cross_entropy).backward()
    plain, checkpointed = (iteration(ck) for ck in (False, True))
    plain(), checkpointed()  # warm-up
    model.zero_grad(set_to_none=True)
    plain_mib = bench.peak_mib(plain)
    model.zero_grad(set_to_none=True)
    assert bench.peak_mib(checkpointed) < 0.6 * plain_mib


def test_first_order_peak_memory_does_not_grow_with_the_inner_steps():
    """FOMAML's meta-gradient needs no step's graph, and the support losses that the inner loop returns keep none."""
    bench = load_benchmark("maml_memory")
    torch.manual_seed(0)
    model = Conv4(5, hidden=16, bn="batch", strided=True)
    batch = image_batch(tasks=8, ways=5, shots=1, size=28, dtype=torch.float32)
    peaks = []
    for steps in (1, 5):
        fomaml = FOMAML(model, alpha=0.4, steps=steps, execution="vmap")
        iteration = lambda: fomaml.meta_loss(batch, F.cross_entropy).backward()  # noqa: E731
        iteration()
        model.zero_grad(set_to_none=True)
        peaks.append(bench.peak_mib(iteration))
        model.zero_grad(set_to_none=True)
    assert peaks[1] < 1.05 * peaks[0], peaks


def test_checkpoint_errors_name_the_argument():
    model = sinusoid_mlp()
    with pytest.raises(ValueError, match="checkpoint must be a bool"):
        MAML(model, checkpoint="yes")
    with pytest.raises(ValueError, match="checkpoint=True cannot be combined with compile"):
        MAML(model, checkpoint=True, compile=True)
    with pytest.raises(ValueError, match="checkpoint must be a bool"):
        batched_inner_loop(functional(model), F.mse_loss, dict(model.named_parameters()),
                           *Sinusoid().sample(2, 3, 3).tensors(), steps=1, alpha=0.1, checkpoint=1)


def test_checkpoint_with_the_loop_refuses_a_module_that_updates_running_statistics():
    model = Conv4(3, hidden=4, bn="running", strided=True, image_size=12).double()  # train(): stats update
    maml = MAML(model, alpha=0.4, steps=1, execution="loop", checkpoint=True)
    with pytest.raises(ValueError, match=r"checkpoint=True with execution='loop'.*running statistics"):
        maml.meta_loss(image_batch(), F.cross_entropy)
