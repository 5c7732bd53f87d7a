"""Executions (vmap, chunks, loop) agree; the learn2learn-shaped learner; Meta-SGD's rates; exports."""
import importlib
import inspect
import pkgutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mapping
from mapping.data import Sinusoid, TaskBatch
from mapping.meta import ANIL, FOMAML, MAML, MetaSGD, Reptile, functional, maml_loss, params_of
from mapping.nn import MLP, Conv4
from reference import reference_meta_loss, relative_error

EXECUTIONS = [("vmap", 8), ("chunk", 2), ("chunk", 3), ("loop", 8)]


def sinusoid(tasks=5, seed=0):
    return Sinusoid().sample(tasks, 4, 6, torch.Generator().manual_seed(seed), dtype=torch.float64)


def tanh_mlp(seed=0):
    torch.manual_seed(seed)
    return MLP((1, 8, 8, 1), activation=nn.Tanh).double()


@pytest.mark.parametrize("cls", [MAML, FOMAML, MetaSGD, ANIL])
def test_every_execution_gives_the_same_loss_and_meta_gradient(cls):
    batch = sinusoid()
    results = []
    for execution, chunk in EXECUTIONS:
        model = tanh_mlp()
        wrapper = cls(model, alpha=0.05, steps=2, execution=execution, chunk_size=chunk)
        loss = wrapper.meta_loss(batch, F.mse_loss)
        inner = wrapper.diagnostics["inner_losses"]
        loss.backward()
        results.append((loss.detach(), inner.detach(), [p.grad for p in wrapper.parameters()]))
    ref_model = tanh_mlp()
    ref = cls(ref_model, alpha=0.05, steps=2)
    want_loss = reference_meta_loss(ref_model, batch, F.mse_loss, steps=2, alpha=ref.alpha,
                                    first_order=cls is FOMAML, adapt=ref.adapt_names)
    want = torch.autograd.grad(want_loss, list(ref.parameters()))
    for (execution, chunk), (loss, inner, grads) in zip(EXECUTIONS, results):
        torch.testing.assert_close(loss, want_loss.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(inner, results[0][1], rtol=1e-12, atol=0)
        assert relative_error(grads, want) <= 1e-10, (execution, chunk)


def test_executions_agree_on_a_conv_net_with_batch_statistics():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch = TaskBatch(torch.rand(3, 3, 1, 12, 12, generator=g, dtype=torch.float64), torch.arange(3).repeat(3, 1),
                      torch.rand(3, 6, 1, 12, 12, generator=g, dtype=torch.float64), torch.arange(3).repeat(3, 2))
    grads = []
    for execution, chunk in EXECUTIONS:
        torch.manual_seed(0)
        model = Conv4(3, hidden=4, image_size=12, blocks=2).double()
        loss = MAML(model, alpha=0.4, steps=2, execution=execution, chunk_size=chunk).meta_loss(batch,
                                                                                               F.cross_entropy)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for other in grads[1:]:
        assert relative_error(other, grads[0]) <= 1e-10


def test_chunked_loss_scales_inside_a_larger_expression_and_skips_gradients_under_no_grad():
    batch = sinusoid()
    model = tanh_mlp()
    loss = MAML(model, alpha=0.05, execution="chunk", chunk_size=2).meta_loss(batch, F.mse_loss)
    (3 * loss + 1).backward()
    chunked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss = MAML(model, alpha=0.05).meta_loss(batch, F.mse_loss)
    (3 * loss).backward()
    assert relative_error(chunked, [p.grad for p in model.parameters()]) <= 1e-12
    with torch.no_grad():
        value = MAML(model, alpha=0.05, execution="chunk").meta_loss(batch, F.mse_loss)
    assert not value.requires_grad


@pytest.mark.parametrize("execution, chunk", EXECUTIONS)
def test_reptile_and_adaptation_curves_agree_across_executions(execution, chunk):
    batch = sinusoid()
    base = Reptile(tanh_mlp(), alpha=0.05, steps=3)
    base.meta_loss(batch, F.mse_loss).backward()
    other = Reptile(tanh_mlp(), alpha=0.05, steps=3, execution=execution, chunk_size=chunk)
    other.meta_loss(batch, F.mse_loss).backward()
    for p, q in zip(base.parameters(), other.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-14)
    for method in (base, MAML(tanh_mlp(), alpha=0.05)):
        curve = method.adaptation_curve(batch, F.mse_loss, steps=4)
        method.execution, method.chunk_size = execution, chunk
        torch.testing.assert_close(method.adaptation_curve(batch, F.mse_loss, steps=4), curve, rtol=1e-12, atol=0)


def test_reptile_has_the_face_of_the_others():
    batch = sinusoid(tasks=1)
    reptile = Reptile(tanh_mlp(), alpha=0.05, steps=3)
    learner = reptile.clone()
    for _ in range(3):
        learner.adapt(F.mse_loss(learner(batch.support_x[0]), batch.support_y[0]))
    query = F.mse_loss(learner(batch.query_x[0]), batch.query_y[0])
    torch.testing.assert_close(query, reptile.adaptation_curve(batch, F.mse_loss, steps=3)[0, -1])


def test_learner_parameters_are_the_adapted_tensors_and_clones_nest():
    batch = sinusoid(tasks=1)
    maml = MAML(tanh_mlp(), alpha=0.05)
    sx, sy = batch.support_x[0], batch.support_y[0]
    learner = maml.clone()
    learner.adapt(F.mse_loss(learner(sx), sy))
    named = dict(learner.named_parameters())
    assert named.keys() == dict(maml.module.named_parameters()).keys()
    assert all(a is b for a, b in zip(learner.parameters(), named.values()))
    assert not any(torch.equal(named[k], p) for k, p in maml.module.named_parameters())
    nested = learner.clone()
    nested.adapt(F.mse_loss(nested(sx), sy))
    twice = maml.clone()
    for _ in range(2):
        twice.adapt(F.mse_loss(twice(sx), sy))
    for a, b in zip(nested.parameters(), twice.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(dict(learner.named_parameters())["head.bias"], named["head.bias"])  # parent unchanged
    ref = reference_meta_loss(maml.module, batch, F.mse_loss, steps=2, alpha=0.05)
    got = torch.autograd.grad(F.mse_loss(nested(batch.query_x[0]), batch.query_y[0]), list(maml.parameters()))
    assert relative_error(got, torch.autograd.grad(ref, list(maml.parameters()))) <= 1e-10


def test_learner_adapt_explains_the_common_slips():
    batch = sinusoid(tasks=1)
    sx, sy = batch.support_x[0], batch.support_y[0]
    maml = MAML(tanh_mlp(), alpha=0.05)
    learner = maml.clone()
    with pytest.raises(ValueError, match=r"loss does not depend on this learner's parameters.*learner\(x\)"):
        learner.adapt(F.mse_loss(maml(sx), sy))  # the meta-model, not the learner
    body_only = lambda: learner.params["body.2.weight"].sum()  # noqa: E731
    with pytest.raises(ValueError, match=r"does not depend on parameters \['body.0.weight'.*allow_unused=True"):
        learner.adapt(body_only())
    head_bias = learner.params["head.bias"]
    learner.adapt(body_only(), allow_unused=True)
    assert learner.params["head.bias"] is head_bias
    model = tanh_mlp()
    model.head.weight.requires_grad_(False)
    frozen = MAML(model, alpha=0.05).clone()
    with pytest.raises(ValueError, match=r"\['head.weight'\] do not require grad.*allow_nograd=True"):
        frozen.adapt(F.mse_loss(frozen(sx), sy))
    keep = MAML(model, alpha=0.05, allow_nograd=True).clone()
    keep.adapt(F.mse_loss(keep(sx), sy))
    assert keep.params["head.weight"] is model.head.weight


class Named(nn.Module):
    """Parameter names with double underscores and dots inside ModuleDict keys."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleDict({"a__b": nn.Linear(1, 6), "c": nn.Linear(6, 1)})
        self.scale__factor = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.scale__factor * self.blocks["c"](torch.tanh(self.blocks["a__b"](x)))


@pytest.mark.parametrize("granularity, shapes", [("parameter", None), ("layer", ()), ("scalar", ())])
def test_metasgd_any_names_and_every_granularity(granularity, shapes):
    torch.manual_seed(0)
    model = Named().double()
    meta = MetaSGD(model, alpha=0.05, steps=2, granularity=granularity)
    names = [k for k, _ in model.named_parameters()]
    assert list(meta.alpha) == names
    for k, p in model.named_parameters():
        assert meta.alpha[k].shape == (p.shape if shapes is None else shapes)
    assert len(meta.rates) == (1 if granularity == "scalar" else len(names))
    batch = sinusoid()
    loss = meta.meta_loss(batch, F.mse_loss)
    got = torch.autograd.grad(loss, list(meta.parameters()))
    ref = reference_meta_loss(model, batch, F.mse_loss, steps=2, alpha=meta.alpha)
    assert relative_error(got, torch.autograd.grad(ref, list(meta.parameters()))) <= 1e-10
    with pytest.raises(ValueError, match="granularity must be one of"):
        MetaSGD(model, granularity="entry")


def test_import_mapping_reaches_every_subpackage_and_public_name():
    assert callable(mapping.train.train) and mapping.meta.MAML is MAML and mapping.data.TaskBatch is TaskBatch
    for name in ("budget", "checkpoint", "data", "device", "experiments", "figures", "meta", "multitask", "nn",
                 "plot", "reproduce", "results", "stats", "train", "transfer"):
        assert inspect.ismodule(getattr(mapping, name)), name
    for package in (mapping.data, mapping.meta, mapping.multitask, mapping.nn, mapping.transfer):
        homes = {}  # what each submodule declares public; the package exports a chosen part of it
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            assert hasattr(module, "__all__"), f"{module.__name__} does not declare its public names"
            homes.update({name: module for name in module.__all__})
        for name in package.__all__:
            assert name in homes and getattr(package, name) is getattr(homes[name], name), \
                f"{package.__name__}.{name} is not a public name of one of its submodules"


def test_functional_core_accepts_the_same_execution_options():
    model = tanh_mlp()
    batch = sinusoid()
    values = [maml_loss(functional(model), F.mse_loss, params_of(model), batch, execution=e, chunk_size=c)[0]
              for e, c in EXECUTIONS]
    for v in values[1:]:
        torch.testing.assert_close(v, values[0], rtol=1e-12, atol=0)
    for bad, match in (({"execution": "threads"}, "execution must be one of"),
                       ({"execution": "chunk", "chunk_size": 0}, "chunk_size must be an int >= 1")):
        with pytest.raises(ValueError, match=match):
            maml_loss(functional(model), F.mse_loss, params_of(model), batch, **bad)
        with pytest.raises(ValueError, match=match):
            MAML(model, **bad)


@pytest.mark.parametrize("execution", ["chunk", "loop"])
def test_differentiating_a_chunked_meta_loss_twice_is_refused_not_silently_wrong(execution):
    model = tanh_mlp()
    loss = MAML(model, alpha=0.05, execution=execution).meta_loss(sinusoid(), F.mse_loss)
    with pytest.raises(RuntimeError, match="cannot be differentiated twice.*execution='vmap'"):
        torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    loss = MAML(model, alpha=0.05, execution="vmap").meta_loss(sinusoid(), F.mse_loss)
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    assert grads[0].requires_grad  # vmap keeps the whole graph: a hypergradient is possible


def test_the_default_execution_is_chunks_of_eight_tasks():
    maml = MAML(tanh_mlp())
    assert (maml.execution, maml.chunk_size) == ("chunk", 8)
    assert (Reptile(tanh_mlp()).execution, MetaSGD(tanh_mlp()).execution) == ("chunk", "chunk")


@pytest.mark.parametrize("execution, chunk, calls", [("vmap", 8, 1), ("chunk", 8, 4), ("chunk", 25, 1),
                                                     ("loop", 8, 0)])
def test_each_execution_runs_as_it_says(monkeypatch, execution, chunk, calls):
    """vmap: one vmapped call over all 25 tasks; chunk: ceil(25 / chunk_size); loop: none."""
    functional_module = importlib.import_module("mapping.meta.functional")
    seen = []

    def counting_vmap(f, *args, **kwargs):
        batched = torch.func.vmap(f, *args, **kwargs)

        def run(*inputs):
            seen.append(inputs[0].shape[0])
            return batched(*inputs)
        return run
    monkeypatch.setattr(functional_module, "vmap", counting_vmap)
    batch = sinusoid(tasks=25)
    for cls in (MAML, MetaSGD, Reptile):
        seen.clear()
        model = cls(tanh_mlp(), alpha=0.05, execution=execution, chunk_size=chunk)
        if cls is Reptile:
            model.meta_loss(batch, F.mse_loss).backward()
        else:
            model.meta_loss(batch, F.mse_loss).backward()
        assert len(seen) == calls and sum(seen) == (25 if calls else 0), (cls.__name__, seen)
        seen.clear()
        model.adaptation_curve(batch, F.mse_loss, steps=2)
        assert len(seen) == calls, (cls.__name__, "adaptation_curve", seen)
