"""The torch.compile path (mapping.meta.compiled): same loss and meta-gradient as eager and as an independent
per-task float64 loop, for every optimization-based method, on the model types users bring; the fallback;
one compiled graph per learner (no silent eager run after torch.compile's recompile limit); the errors.

Most tests use the ``aot_eager`` backend (dynamo's tracing and AOT autograd without code generation: seconds
to compile); ``test_inductor_...`` runs the default backend that training uses.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.data import Sinusoid, TaskBatch
from mapping.meta import (ANIL, FOMAML, MAML, MatchingNetwork, MetaSGD, PrototypicalNetwork, Reptile,
                          compile_seconds)
from mapping.meta.compiled import CompiledFn
from mapping.nn import Conv4, sinusoid_mlp
from reference import reference_meta_loss, relative_error

FAST = {"backend": "aot_eager"}


def sinusoid_batch(tasks=6, k=5, seed=0):
    return Sinusoid.maml().sample(tasks, k, k, torch.Generator().manual_seed(seed), dtype=torch.float64)


def grads_of(module):
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


def meta_grads(learner, batch, loss_fn=F.mse_loss):
    learner.zero_grad()
    loss = learner.meta_loss(batch, loss_fn)
    inner = learner.diagnostics["inner_losses"]
    loss.backward()
    return loss.detach(), inner.detach(), grads_of(learner)


def build(method, net, **kw):
    head = [k for k, _ in net.named_parameters()][-2:]
    return {"maml": lambda: MAML(net, **kw), "fomaml": lambda: FOMAML(net, **kw),
            "metasgd": lambda: MetaSGD(net, **kw), "anil": lambda: ANIL(net, head=head, **kw)}[method]()


@pytest.mark.parametrize("execution", ["vmap", "chunk"])
@pytest.mark.parametrize("method", ["maml", "fomaml", "metasgd", "anil"])
def test_compiled_meta_gradient_equals_eager_and_a_per_task_loop(float64, method, execution):
    torch.manual_seed(0)
    net = sinusoid_mlp()
    batch = sinusoid_batch()
    kw = dict(alpha=0.05, steps=2, execution=execution, chunk_size=4)  # 6 tasks: chunks of 4 and 2
    eager, compiled = build(method, net, **kw), build(method, net, compile=FAST, **kw)
    if method == "metasgd":
        with torch.no_grad():  # distinct rates per entry, shared by both learners
            for r in eager.rates:
                r.uniform_(0.01, 0.1)
        compiled.rates = eager.rates
    loss, inner, grads = meta_grads(eager, batch)
    c_loss, c_inner, c_grads = meta_grads(compiled, batch)
    torch.testing.assert_close(c_loss, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_inner, inner, rtol=1e-12, atol=1e-12)
    assert c_grads.keys() == grads.keys() and len(grads) == (12 if method == "metasgd" else 6)
    torch.testing.assert_close(c_grads, grads, rtol=1e-10, atol=1e-12)
    assert compile_seconds(compiled) > 0 and compile_seconds(eager) is None

    alpha = eager.alpha
    ref = reference_meta_loss(net, batch, F.mse_loss, steps=2, alpha=alpha, first_order=method == "fomaml",
                              adapt=eager.adapt_names)
    tensors = [p for _, p in net.named_parameters()] + (list(eager.rates) if method == "metasgd" else [])
    expected = torch.autograd.grad(ref, tensors)
    got = [c_grads[k] for k, _ in compiled.named_parameters() if k in c_grads]
    names = [k for k, _ in compiled.named_parameters()]
    assert names[:6] == [f"module.{k}" for k, _ in net.named_parameters()]
    assert relative_error(got, expected) < 1e-10


class NormNet(nn.Module):
    """A user's model: convolution, layer norm and a buffer (a fixed input scale)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.LayerNorm([4, 6, 6])
        self.head = nn.Linear(4 * 36, 3)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x * self.scale))).flatten(1))


def image_batch(tasks=4, n_way=3, shots=2, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(tasks, 2 * n_way * shots, 1, size, size, generator=g, dtype=torch.float64)
    y = torch.arange(n_way).repeat_interleave(shots).repeat(tasks, 2)  # (tasks, 2 * n * k)
    m = n_way * shots
    return TaskBatch(x[:, :m], y[:, :m], x[:, m:], y[:, m:])


@pytest.mark.parametrize("model", ["layer_norm", "conv4_batch_norm", "conv4_eval_norm"])
def test_compiled_second_order_maml_on_norm_layers_equals_a_per_task_loop(float64, model):
    torch.manual_seed(0)
    if model == "layer_norm":
        net, batch = NormNet(), image_batch()
    else:
        net = Conv4(3, hidden=4, bn="batch" if model == "conv4_batch_norm" else "running")
        batch = image_batch(size=28)
        if model == "conv4_eval_norm":
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
            net.eval()
    net.double()
    maml = MAML(net, alpha=0.1, steps=2, execution="vmap", compile=FAST)
    _, _, grads = meta_grads(maml, batch, F.cross_entropy)
    ref = reference_meta_loss(net, batch, F.cross_entropy, steps=2, alpha=0.1)
    expected = torch.autograd.grad(ref, [p for _, p in net.named_parameters()])
    assert relative_error([grads[f"module.{k}"] for k, _ in net.named_parameters()], expected) < 1e-10


def test_inductor_compiled_maml_equals_a_per_task_loop_and_reports_its_compile_time(float64):
    torch.manual_seed(0)
    net = sinusoid_mlp()
    batch = sinusoid_batch(tasks=5)
    maml = MAML(net, alpha=0.05, steps=1, execution="vmap", compile=True)
    _, _, grads = meta_grads(maml, batch)
    ref = reference_meta_loss(net, batch, F.mse_loss, steps=1, alpha=0.05)
    expected = torch.autograd.grad(ref, [p for _, p in net.named_parameters()])
    assert relative_error([grads[f"module.{k}"] for k, _ in net.named_parameters()], expected) < 1e-10
    first = compile_seconds(maml)
    assert first > 0 and maml.compiled.error is None
    meta_grads(maml, sinusoid_batch(tasks=5, seed=1))  # same shapes: no new compilation
    assert compile_seconds(maml) == first


def test_compiled_reptile_adapts_like_eager(float64):
    torch.manual_seed(0)
    net = sinusoid_mlp()
    batch = sinusoid_batch()
    eager = Reptile(net, alpha=0.02, steps=3, execution="vmap")
    compiled = Reptile(net, alpha=0.02, steps=3, execution="chunk", chunk_size=4, compile=FAST)
    for learner in (eager, compiled):
        learner.zero_grad()
        learner.meta_loss(batch, F.mse_loss).backward()
    torch.testing.assert_close(grads_of(compiled), grads_of(eager), rtol=1e-12, atol=1e-12)
    assert compile_seconds(compiled) > 0


def counting_backend(graphs):
    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    return backend


def test_every_learner_gets_its_own_compiled_graph_beyond_the_recompile_limit():
    """torch.compile allows 8 graphs per code object, then runs eagerly with only a log line: each learner's
    meta-step has its own code object, so the tenth learner is still compiled."""
    graphs = []
    batch = Sinusoid.maml().sample(3, 4, 4, torch.Generator().manual_seed(0))
    for i in range(10):
        torch.manual_seed(i)
        maml = MAML(sinusoid_mlp(hidden=8), alpha=0.01, steps=1, execution="vmap",
                    compile={"backend": counting_backend(graphs)})
        meta_grads(maml, batch)
    assert len(graphs) == 10


def failing_backend(gm, example_inputs):
    raise RuntimeError("no C compiler on this machine")


def test_a_failed_compilation_warns_and_falls_back_to_eager(float64):
    torch.manual_seed(0)
    net = sinusoid_mlp()
    batch = sinusoid_batch()
    eager = MAML(net, alpha=0.05, steps=1, execution="vmap")
    broken = MAML(net, alpha=0.05, steps=1, execution="vmap", compile={"backend": failing_backend})
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no C compiler"):
        _, _, grads = meta_grads(broken, batch)
    torch.testing.assert_close(grads, meta_grads(eager, batch)[2], rtol=1e-12, atol=1e-12)
    assert broken.compiled.error is not None and compile_seconds(broken) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the next call runs eagerly without warning again
        meta_grads(broken, batch)


def test_compiled_path_raises_on_non_finite_data_and_inner_losses_before_any_gradient():
    torch.manual_seed(0)
    net = sinusoid_mlp()
    maml = MAML(net, alpha=0.01, steps=1, execution="vmap", compile=FAST)
    batch = Sinusoid.maml().sample(4, 5, 5, torch.Generator().manual_seed(0))
    meta_grads(maml, batch)  # compiled and validated once
    bad = TaskBatch(batch.support_x.clone(), batch.support_y, batch.query_x, batch.query_y)
    bad.support_x[2, 0, 0] = float("nan")
    maml.zero_grad()
    with pytest.raises(FloatingPointError, match="support_x holds a non-finite value.*task 2"):
        maml.meta_loss(bad, F.mse_loss)
    huge = MAML(net, alpha=1e30, steps=2, execution="vmap", compile=FAST)
    huge.zero_grad()
    with pytest.raises(FloatingPointError, match="inner step 2"):
        huge.meta_loss(batch, F.mse_loss)
    assert all(p.grad is None for p in net.parameters())


def test_compiled_path_rechecks_the_module_mode_on_every_call():
    net = Conv4(3, hidden=4, bn="running")
    net.eval()
    maml = MAML(net, alpha=0.1, steps=1, execution="vmap", compile=FAST)
    batch = image_batch(size=28)
    batch = TaskBatch(*(t.float() if t.is_floating_point() else t for t in batch.tensors()))
    meta_grads(maml, batch, F.cross_entropy)
    net.train()  # running statistics cannot be updated once per task under vmap
    with pytest.raises(ValueError, match="train\\(\\) mode with running statistics"):
        maml.meta_loss(batch, F.cross_entropy)


def test_compiled_loss_cannot_be_differentiated_twice():
    maml = MAML(sinusoid_mlp(hidden=8), alpha=0.01, steps=1, execution="vmap", compile=FAST)
    loss = maml.meta_loss(Sinusoid.maml().sample(3, 4, 4, torch.Generator().manual_seed(0)), F.mse_loss)
    with pytest.raises(RuntimeError, match="cannot be differentiated twice"):
        torch.autograd.grad(loss, list(maml.parameters()), create_graph=True)


@pytest.mark.parametrize("cls, kwargs, match", [
    (MAML, dict(compile="yes"), "compile must be a bool or a dict"),
    (MAML, dict(compile=True, execution="loop"), "compile=True needs execution='vmap' or 'chunk'"),
    (Reptile, dict(compile=True, inner="adam"), "compile=True applies to inner='sgd'"),
])
def test_bad_compile_options_are_rejected(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(sinusoid_mlp(hidden=8), **kwargs)


def test_compiled_fn_rejects_what_is_not_callable():
    with pytest.raises(ValueError, match="fn must be callable"):
        CompiledFn(42)


@pytest.mark.parametrize("cls", [PrototypicalNetwork, MatchingNetwork])
def test_compiled_metric_loss_equals_eager(float64, cls):
    torch.manual_seed(0)
    backbone = Conv4(hidden=4, bn="batch").double()
    eager, compiled = cls(backbone), cls(backbone, compile=FAST)
    batch = image_batch(size=28)
    results = []
    for learner in (eager, compiled):
        learner.zero_grad()
        loss = learner.meta_loss(batch)
        accuracy = learner.diagnostics["accuracy"]
        loss.backward()
        results.append((loss.detach(), accuracy, grads_of(backbone)))
    (loss, accuracy, grads), (c_loss, c_accuracy, c_grads) = results
    torch.testing.assert_close(c_loss, loss, rtol=1e-12, atol=1e-12)
    assert c_accuracy == accuracy and len(grads) == len(list(backbone.parameters()))
    torch.testing.assert_close(c_grads, grads, rtol=1e-10, atol=1e-12)
    assert compiled.compiled.compile_seconds > 0 and eager.compiled is None
    bad = TaskBatch(batch.support_x, batch.support_y.clone(), batch.query_x, batch.query_y)
    bad.support_y[1] = 0  # task 1 has no example of classes 1 and 2: checked eagerly, before compiling
    with pytest.raises(ValueError, match="no example of class 1 in task 1"):
        compiled.meta_loss(bad)


@pytest.mark.slow
def test_inductor_compiled_protonet_equals_eager_in_float64(float64):
    torch.manual_seed(0)
    backbone = Conv4(hidden=8, bn="batch").double()
    batch = image_batch(size=28)
    grads = []
    for compile in (False, True):
        learner = PrototypicalNetwork(backbone, compile=compile)
        backbone.zero_grad()
        learner.meta_loss(batch).backward()
        grads.append([p.grad.clone() for p in backbone.parameters()])
    assert relative_error(grads[1], grads[0]) < 1e-10
