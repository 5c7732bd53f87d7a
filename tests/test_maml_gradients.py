"""MAML's meta-gradient against finite differences, the closed form, FOMAML, and a Python loop."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.data import Sinusoid, TaskBatch
from mapping.meta import FOMAML, MAML, MetaSGD, functional, maml_loss, params_of
from mapping.nn import MLP


def central_difference(f, params, eps=1e-6):
    """d f / d params by central differences, entry by entry (float64)."""
    out = {}
    for name, p in params.items():
        g = torch.zeros_like(p)
        flat = p.detach().view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            plus = f().item()
            flat[i] = old - eps
            minus = f().item()
            flat[i] = old
            g.view(-1)[i] = (plus - minus) / (2 * eps)
        out[name] = g
    return out


def relative_error(a, b):
    num = sum(torch.sum((a[k] - b[k]) ** 2) for k in a).sqrt()
    den = sum(torch.sum(b[k] ** 2) for k in b).sqrt()
    return (num / den).item()


def small_batch(tasks=3, k=4, q=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Sinusoid().sample(tasks, k, q, g, dtype=torch.float64)


@pytest.mark.parametrize("steps", [1, 2])
def test_maml_meta_gradient_matches_finite_differences(float64, steps):
    torch.manual_seed(0)
    model = MLP((1, 6, 6, 1), activation=nn.Tanh)
    batch = small_batch()
    maml = MAML(model, alpha=0.05, steps=steps)
    loss = maml.meta_loss(batch, F.mse_loss)
    analytic = dict(zip(maml.params(), torch.autograd.grad(loss, list(maml.params().values()))))
    with torch.no_grad():
        numeric = central_difference(lambda: maml.meta_loss(batch, F.mse_loss), maml.params())
    assert relative_error(analytic, numeric) < 1e-6


def least_squares(d=3, tasks=4, k=6, q=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(tasks, d, 1, generator=g)  # (tasks, d, 1)
    sx, qx = torch.randn(tasks, k, d, generator=g), torch.randn(tasks, q, d, generator=g)  # (tasks, shots, d)
    return TaskBatch(sx, sx @ w_true, qx, qx @ w_true + 0.1)


def closed_form(w, batch, alpha, first_order):
    """(I - alpha H_support) grad L_query(w') averaged over tasks, for L = mean squared error of x @ w."""
    grads = []
    for sx, sy, qx, qy in zip(*batch.tensors()):
        h_s = 2 * sx.T @ sx / sx.shape[0]  # (d, d)
        g_s = 2 * sx.T @ (sx @ w - sy) / sx.shape[0]  # (d, 1)
        w_fast = w - alpha * g_s
        g_q = 2 * qx.T @ (qx @ w_fast - qy) / qx.shape[0]  # (d, 1)
        jac = torch.eye(len(w)) if first_order else torch.eye(len(w)) - alpha * h_s
        grads.append(jac @ g_q)
    return torch.stack(grads).mean(0)  # (d, 1)


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_closed_form_for_least_squares(float64, first_order):
    torch.manual_seed(1)
    model = nn.Linear(3, 1, bias=False)
    batch = least_squares()
    maml = (FOMAML if first_order else MAML)(model, alpha=0.1, steps=1)
    loss = maml.meta_loss(batch, F.mse_loss)
    loss.backward()
    w = model.weight.detach().T  # (d, 1)
    torch.testing.assert_close(model.weight.grad.T, closed_form(w, batch, 0.1, first_order), rtol=1e-10, atol=1e-12)


def test_first_order_differs_from_second_order_by_the_hessian_term(float64):
    """The two agree only when alpha H_support vanishes; here they must differ."""
    torch.manual_seed(1)
    model = nn.Linear(3, 1, bias=False)
    batch = least_squares()
    w = model.weight.detach().T
    second, first = closed_form(w, batch, 0.1, False), closed_form(w, batch, 0.1, True)
    assert (second - first).norm() > 1e-3 * first.norm()


@pytest.mark.parametrize("cls", [MAML, FOMAML, MetaSGD])
def test_vmapped_meta_batch_equals_python_loop(float64, cls):
    torch.manual_seed(0)
    model = MLP((1, 8, 8, 1), activation=nn.Tanh)
    batch = small_batch(tasks=5)
    maml = cls(model, alpha=0.03, steps=2)
    loss = maml.meta_loss(batch, F.mse_loss)
    vmapped = torch.autograd.grad(loss, list(maml.parameters()))
    losses = []
    for t in range(batch.num_tasks):  # learn2learn style: clone, adapt, evaluate
        learner = maml.clone()
        for _ in range(2):
            learner.adapt(F.mse_loss(learner(batch.support_x[t]), batch.support_y[t]))
        losses.append(F.mse_loss(learner(batch.query_x[t]), batch.query_y[t]))
    looped = torch.autograd.grad(torch.stack(losses).mean(), list(maml.parameters()))
    torch.testing.assert_close(loss, torch.stack(losses).mean())
    for a, b in zip(vmapped, looped):
        torch.testing.assert_close(a, b)


def test_metasgd_rates_gradient_matches_finite_differences(float64):
    torch.manual_seed(0)
    model = MLP((1, 5, 1), activation=nn.Tanh)
    batch = small_batch()
    meta = MetaSGD(model, alpha=0.05, steps=1)
    loss = meta.meta_loss(batch, F.mse_loss)
    rates = meta.alpha  # name -> learned rate tensor
    analytic = dict(zip(rates, torch.autograd.grad(loss, list(rates.values()))))
    with torch.no_grad():
        numeric = central_difference(lambda: meta.meta_loss(batch, F.mse_loss), rates)
    assert relative_error(analytic, numeric) < 1e-6


def test_anil_moves_only_the_head():
    torch.manual_seed(0)
    from mapping.meta import ANIL, batched_inner_loop
    model = MLP((1, 8, 8, 1))
    anil = ANIL(model, alpha=0.1, steps=3)
    batch = small_batch(seed=3)
    params = {k: v.detach().float() for k, v in params_of(model).items()}
    fast, _, _ = batched_inner_loop(functional(model), F.mse_loss, params, batch.support_x.float(),
                                    batch.support_y.float(), steps=3, alpha=0.1, adapt=anil.adapt_names)
    for name, p in params.items():
        moved = not torch.equal(fast[name][0], p)
        assert moved == name.startswith("head."), name


def test_functional_loss_matches_module_forward():
    torch.manual_seed(0)
    model = MLP((1, 8, 1))
    x = torch.randn(4, 1)
    torch.testing.assert_close(functional(model)(params_of(model), x), model(x))
    loss, inner = maml_loss(functional(model), F.mse_loss, params_of(model), small_batch().to("cpu", torch.float32),
                            steps=0)
    assert inner.shape == (3, 0) and torch.isfinite(loss)
