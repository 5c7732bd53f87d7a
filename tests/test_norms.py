"""Exact meta-gradients through every normalisation layer torch ships, under the vmapped path.

Reference: an independent per-task loop with ``torch.autograd.grad(create_graph=True)`` in float64
(``tests/reference.py``). Required agreement: relative error at most 1e-10, for 1, 2 and 3 inner steps,
for MAML, first-order MAML, Meta-SGD and ANIL, with each layer inside a small unchanged user model.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from mapping.data import TaskBatch
from mapping.meta import ANIL, FOMAML, MAML, MetaSGD, Reptile
from mapping.nn import BatchStatNorm2d
from mapping.nn.norms import ROUTES, check_vmappable, primitive_norms
from reference import reference_meta_loss, relative_error

LAYERS = {  # name: (constructor, spatial dims of the input it normalises)
    "LayerNorm": (lambda c: nn.LayerNorm([c, 4, 4]), 2),
    "GroupNorm": (lambda c: nn.GroupNorm(2, c), 2),
    "InstanceNorm1d": (lambda c: nn.InstanceNorm1d(c, affine=True), 1),
    "InstanceNorm2d": (lambda c: nn.InstanceNorm2d(c, affine=True), 2),
    "InstanceNorm3d": (lambda c: nn.InstanceNorm3d(c, affine=True), 3),
    "BatchNorm1d": (lambda c: nn.BatchNorm1d(c, track_running_stats=False), 1),
    "BatchNorm2d": (lambda c: nn.BatchNorm2d(c, track_running_stats=False), 2),
    "BatchNorm3d": (lambda c: nn.BatchNorm3d(c, track_running_stats=False), 3),
    "BatchNorm2d-eval": (lambda c: nn.BatchNorm2d(c).eval(), 2),
    "BatchStatNorm2d": (lambda c: BatchStatNorm2d(c), 2),
    "RMSNorm": (lambda c: nn.RMSNorm([c, 4, 4]), 2),
    "LocalResponseNorm": (lambda c: nn.LocalResponseNorm(2), 2),
}
METHODS = {"maml": MAML, "fomaml": FOMAML, "metasgd": MetaSGD, "anil": ANIL}


class SmallNet(nn.Module):
    """conv -> norm -> tanh -> linear head: the smallest model a user might bring with a norm layer."""

    def __init__(self, norm: nn.Module, dims: int, channels: int = 4, ways: int = 3) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.conv = conv(2, channels, 3, padding=1)
        self.norm = norm
        self.head = nn.Linear(channels * 4 ** dims, ways)

    def forward(self, x):
        return self.head(torch.tanh(self.norm(self.conv(x))).flatten(1))  # (shots, ways)

    def head_names(self):
        return ["head.weight", "head.bias"]


def make(name, seed=0, tasks=3, shots=4, ways=3):
    torch.manual_seed(seed)
    build, dims = LAYERS[name]
    norm = build(4)
    if name.endswith("-eval"):  # stored statistics far from the batch's
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    model = SmallNet(norm, dims, ways=ways).double()
    with torch.no_grad():  # move norm affine parameters away from 1 / 0 so that every term matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    g = torch.Generator().manual_seed(seed + 1)
    shape = (2,) + (4,) * dims
    x = torch.randn(tasks, 2 * shots, *shape, generator=g, dtype=torch.float64)  # (tasks, 2 shots, 2, 4, ...)
    y = torch.arange(ways).repeat(2 * shots)[: 2 * shots].repeat(tasks, 1)  # (tasks, 2 shots)
    return model, TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def meta_gradient(method, model, batch, steps, execution="vmap"):
    wrapper = METHODS[method](model, alpha=0.3, steps=steps, execution=execution, chunk_size=2)
    inputs = list(wrapper.parameters())
    loss = wrapper.meta_loss(batch, F.cross_entropy)
    return wrapper, loss, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("layer", list(LAYERS))
def test_vmapped_meta_gradient_is_exact_with_every_norm_layer(layer, method, steps):
    model, batch = make(layer)
    wrapper, loss, got = meta_gradient(method, model, batch, steps)
    first = method == "fomaml"
    alpha = wrapper.alpha
    ref_loss = reference_meta_loss(model, batch, F.cross_entropy, steps=steps, alpha=alpha, first_order=first,
                                   adapt=wrapper.adapt_names)
    want = torch.autograd.grad(ref_loss, list(wrapper.parameters()))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    assert relative_error(got, want) <= 1e-10


def native_vmapped_gradient(func, weight, x, y):
    """MAML's meta-gradient for one task through torch's own ``func`` (no routing), under ``vmap``."""
    def task_loss(w, x_, y_):
        inner = lambda v: ((func(x_, v) - y_) ** 2).mean()  # noqa: E731
        return inner(w - 0.5 * grad(inner)(w))
    w = weight.clone().requires_grad_()
    loss = vmap(task_loss, in_dims=(None, 0, 0))(w, x[None], y[None]).mean()
    return torch.autograd.grad(loss, w)[0]


def looped_gradient(func, weight, x, y):
    w = weight.clone().requires_grad_()
    inner = lambda v: ((func(x, v) - y) ** 2).mean()  # noqa: E731
    g, = torch.autograd.grad(inner(w), w, create_graph=True)
    return torch.autograd.grad(inner(w - 0.5 * g), w)[0]


KERNELS = {  # each routed kernel as a function of (input, weight); weights also enter the input (as in a model)
    F.layer_norm: lambda x, w: F.layer_norm(x * w, (5,), w, None),
    F.batch_norm: lambda x, w: F.batch_norm(x * w, None, None, w, None, training=True),
    F.instance_norm: lambda x, w: F.instance_norm((x * w).T[None], weight=w)[0].T,  # (1, features, batch)
}


@pytest.mark.parametrize("kernel", list(KERNELS), ids=lambda f: f.__name__)
def test_torch_kernel_still_wrong_under_vmap_so_the_routing_is_needed(kernel):
    """When this fails, torch differentiates ``kernel`` correctly under vmap: drop it from ``ROUTES``."""
    assert kernel in ROUTES
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(2))  # (batch, features)
    w = 1 + 0.3 * torch.randn(5, generator=g, dtype=torch.float64)  # (features,)
    want = looped_gradient(KERNELS[kernel], w, x, y)
    native = native_vmapped_gradient(KERNELS[kernel], w, x, y)
    with primitive_norms():
        routed = native_vmapped_gradient(KERNELS[kernel], w, x, y)
    assert relative_error([routed], [want]) <= 1e-12
    assert relative_error([native], [want]) > 1e-8, f"torch now gets {kernel.__name__} right under vmap"


def test_routing_leaves_forward_values_unchanged():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 5, 5, generator=g, dtype=torch.float64)  # (N, C, H, W)
    w, b = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    rm, rv = torch.randn(3, generator=g, dtype=torch.float64), torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    calls = [lambda: F.layer_norm(x, (3, 5, 5), None, None, eps=1e-3),
             lambda: F.layer_norm(x, [5], torch.ones(5, dtype=x.dtype), torch.zeros(5, dtype=x.dtype)),
             lambda: F.batch_norm(x, None, None, w, b, training=True, eps=1e-4),
             lambda: F.batch_norm(x, rm, rv, w, b, training=False),
             lambda: F.instance_norm(x, weight=w, bias=b),
             lambda: F.instance_norm(x, rm, rv, w, b, use_input_stats=False)]
    for call in calls:
        native = call()
        with primitive_norms():
            routed = call()
        torch.testing.assert_close(routed, native, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("execution", ["vmap", "chunk"])
def test_running_statistics_in_train_mode_name_the_module_and_the_ways_out(execution):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).double()
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(*(torch.randn(2, 5, k, generator=g, dtype=torch.float64) for k in (3, 1, 3, 1)))
    with pytest.raises(ValueError, match=r"module '1' \(BatchNorm1d\) is in train\(\) mode with running statistics"
                                         r".*eval\(\).*track_running_stats=False.*execution='loop'"):
        MAML(model, execution=execution).meta_loss(batch, F.mse_loss)
    before = model[1].running_mean.clone()
    model.eval()
    MAML(model, execution=execution).meta_loss(batch, F.mse_loss)  # stored statistics: fine
    assert torch.equal(model[1].running_mean, before)
    with pytest.raises(ValueError, match="module 'norm'"):
        check_vmappable(SmallNet(nn.InstanceNorm2d(4, track_running_stats=True), 2))
    with pytest.raises(ValueError, match="F.batch_norm was asked to update running statistics"):
        with primitive_norms():
            F.batch_norm(torch.randn(4, 3), torch.zeros(3), torch.ones(3), training=True)


def test_loop_execution_updates_running_statistics_task_by_task_as_learn2learn():
    """``execution="loop"``: one forward after another, each updating the buffers (learn2learn's semantics)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double()
    twin = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double()
    twin.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(1)
    batch = TaskBatch(*(torch.randn(3, 5, k, generator=g, dtype=torch.float64) for k in (3, 1, 3, 1)))
    maml = MAML(model, alpha=0.1, steps=2, execution="loop")
    loss = maml.meta_loss(batch, F.mse_loss)
    got = torch.autograd.grad(loss, list(model.parameters()))
    ref = reference_meta_loss(twin, batch, F.mse_loss, steps=2, alpha=0.1)  # also updates twin's buffers in order
    want = torch.autograd.grad(ref, list(twin.parameters()))
    assert relative_error(got, want) <= 1e-10
    torch.testing.assert_close(model[1].running_mean, twin[1].running_mean, rtol=0, atol=0)
    torch.testing.assert_close(model[1].running_var, twin[1].running_var, rtol=0, atol=0)
    assert int(model[1].num_batches_tracked) == 3 * 3  # 3 tasks x (2 support forwards + 1 query forward)


@pytest.mark.parametrize("execution", ["chunk", "loop"])
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("layer", list(LAYERS))
def test_chunk_and_loop_meta_gradients_are_exact_with_every_norm_layer(layer, method, execution):
    model, batch = make(layer)
    wrapper, loss, got = meta_gradient(method, model, batch, 2, execution=execution)
    ref_loss = reference_meta_loss(model, batch, F.cross_entropy, steps=2, alpha=wrapper.alpha,
                                   first_order=method == "fomaml", adapt=wrapper.adapt_names)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    assert relative_error(got, torch.autograd.grad(ref_loss, list(wrapper.parameters()))) <= 1e-10


def reference_reptile_direction(model, batch, steps, alpha):
    """mean_i(theta'_i - theta) by a plain per-task loop of SGD steps on support and query together."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    moves = []
    for t in range(batch.num_tasks):
        x = torch.cat([batch.support_x[t], batch.query_x[t]])
        y = torch.cat([batch.support_y[t], batch.query_y[t]])
        fast = {k: v.clone().requires_grad_() for k, v in params.items()}
        for _ in range(steps):
            loss = F.cross_entropy(torch.func.functional_call(model, fast, (x,)), y)
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {k: (v - alpha * g).detach().requires_grad_() for (k, v), g in zip(fast.items(), grads)}
        moves.append({k: fast[k].detach() - params[k] for k in params})
    return [torch.stack([m[k] for m in moves]).mean(0) for k in params]


@pytest.mark.parametrize("execution", ["vmap", "chunk", "loop"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_reptile_and_adaptation_curves_are_exact_with_every_norm_layer(layer, execution):
    model, batch = make(layer)
    reptile = Reptile(model, alpha=0.3, steps=3, execution=execution, chunk_size=2)
    reptile.meta_loss(batch, F.cross_entropy).backward()
    want = reference_reptile_direction(model, batch, 3, 0.3)
    assert relative_error([-p.grad for p in model.parameters()], want) <= 1e-10
    curve = reptile.adaptation_curve(batch, F.cross_entropy, steps=2)  # (tasks, 3)
    for t in range(batch.num_tasks):
        learner = reptile.clone()
        for s in range(3):
            query = F.cross_entropy(learner(batch.query_x[t]), batch.query_y[t])
            torch.testing.assert_close(curve[t, s], query.detach(), rtol=1e-10, atol=0)
            learner.adapt(F.cross_entropy(learner(batch.support_x[t]), batch.support_y[t]))
