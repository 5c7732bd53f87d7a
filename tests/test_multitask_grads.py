"""Per-task gradients in one pass, the gradient aggregators and mtl_backward (float64 throughout).

References are independent of the package: one ``torch.autograd.grad`` per task for the Jacobian, the aggregators
written directly on the rows of J (projections of vectors, closed forms, brute-force grids on the simplex), and
optimality (KKT) conditions of each aggregator's small problem.
"""
import importlib.util
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.multitask.aggregators import (CAGrad, IMTLG, MGDA, Mean, PCGrad, UPGrad, check_gramian, nonneg_qp,
                                           project_simplex)
from mapping.multitask.backward import mtl_backward, task_leaves
from mapping.multitask.jacobian import gramian, jacobian_blocks, task_jacobian
from mapping.results import PROVENANCE_FIELDS
from reference import relative_error

D = torch.float64


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def reference_jacobian(losses, params):
    """One ``torch.autograd.grad`` per task; zeros where a task does not reach a parameter."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]))
    return torch.stack(rows)  # (T, P)


class HardSharing(nn.Module):
    """A shared trunk and one linear head per task."""

    def __init__(self, trunk, width, tasks, out=1):
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(nn.Linear(width, out) for _ in range(tasks))

    def losses(self, x, ys):
        z = self.trunk(x)  # (batch, width)
        return torch.stack([F.mse_loss(h(z), y) for h, y in zip(self.heads, ys)]), z  # (T,), (batch, width)


def mlp_model(tasks=3, seed=0):
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh())
    model = HardSharing(trunk, 6, tasks).to(D)
    g = rng(seed)
    x = torch.randn(10, 5, generator=g, dtype=D)  # (batch, in)
    ys = torch.randn(tasks, 10, 1, generator=g, dtype=D)  # (T, batch, 1)
    return model, x, ys


def conv_model(tasks=3, seed=0):
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3, track_running_stats=False), nn.ReLU(),
                          nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.LayerNorm(36), nn.Linear(36, 6), nn.Tanh())
    model = HardSharing(trunk, 6, tasks).to(D).train()
    g = rng(seed)
    return model, torch.randn(5, 1, 8, 8, generator=g, dtype=D), torch.randn(tasks, 5, 1, generator=g, dtype=D)


@pytest.mark.parametrize("make", [mlp_model, conv_model])
@pytest.mark.parametrize("as_list", [False, True])
def test_one_pass_jacobian_equals_one_autograd_grad_per_task(make, as_list):
    model, x, ys = make()
    losses, _ = model.losses(x, ys)
    params = list(model.trunk.parameters())
    want = reference_jacobian(losses, params)
    given = list(losses.unbind()) if as_list else losses
    for one_pass in (True, False):
        J = task_jacobian(given, params, one_pass=one_pass)
        assert J.shape == (3, sum(p.numel() for p in params))
        assert relative_error([J], [want]) <= 1e-10


def test_parameters_that_some_tasks_do_not_reach_give_zero_rows_and_columns():
    model, x, ys = mlp_model()
    extra = nn.Linear(6, 1).to(D)  # reached by task 0 only
    unused = nn.Parameter(torch.ones(4, dtype=D))  # reached by no task
    losses, z = model.losses(x, ys)
    losses = torch.stack([losses[0] + extra(z).pow(2).mean(), losses[1], losses[2]])
    params = list(model.trunk.parameters()) + list(extra.parameters()) + [unused]
    J = task_jacobian(losses, params)
    assert relative_error([J], [reference_jacobian(losses, params)]) <= 1e-10
    n_extra = sum(p.numel() for p in extra.parameters())
    block = J[:, -4 - n_extra:-4]  # (T, n_extra)
    assert block[0].abs().sum() > 0 and block[1:].abs().sum() == 0
    assert J[:, -4:].abs().sum() == 0
    blocks = jacobian_blocks(losses, params)
    assert blocks[-1] is None and blocks[-2].shape == (3, 1)


def test_jacobian_wrt_the_shared_representation():
    model, x, ys = mlp_model()
    losses, z = model.losses(x, ys)
    J = task_jacobian(losses, z)  # (T, batch * width)
    assert J.shape == (3, z.numel())
    assert relative_error([J], [reference_jacobian(losses, [z])]) <= 1e-10


class ItemInBackward(torch.autograd.Function):
    """Doubling, whose backward reads a Python number: vmap has no batching rule for it."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        return g * (2.0 if g.abs().sum().item() >= 0 else 0.0)


def test_an_op_without_batching_rule_falls_back_to_the_loop_with_one_warning():
    model, x, ys = mlp_model()
    z = ItemInBackward.apply(model.trunk(x))
    losses = torch.stack([F.mse_loss(h(z), y) for h, y in zip(model.heads, ys)])
    params = list(model.trunk.parameters())
    with pytest.warns(RuntimeWarning, match=r"batched backward failed \(.*item.*\); falling back") as record:
        J = task_jacobian(losses, params)
    assert len(record) == 1
    assert relative_error([J], [reference_jacobian(losses, params)]) <= 1e-10


def test_gramian_holds_the_inner_products():
    J = torch.randn(3, 7, generator=rng(), dtype=D)
    G = gramian(J)
    assert torch.allclose(G, torch.stack([torch.stack([a @ b for b in J]) for a in J]), rtol=1e-14, atol=0)


# ---------------------------------------------------------------------------------------------------- aggregators

def jacobian(T, P, seed=0, shift=0.0):
    g = rng(seed)
    return torch.randn(T, P, generator=g, dtype=D) + shift * torch.randn(1, P, generator=g, dtype=D)  # (T, P)


def conflicting(T, P=6, seed=0):
    """Rows with at least one negative inner product, and different norms."""
    for s in itertools.count(seed):
        J = jacobian(T, P, s, shift=0.5) * torch.linspace(0.5, 2.0, T, dtype=D)[:, None]  # (T, P)
        if (gramian(J) < 0).any():
            return J


def direct_pcgrad(J, order):
    """Yu et al. 2020, Algorithm 1 on the vectors themselves, with given orders."""
    out = []
    for i, others in enumerate(order):
        g = J[i].clone()
        for j in others:
            if g @ J[j] < 0:
                g = g - (g @ J[j]) / (J[j] @ J[j]) * J[j]
        out.append(g)
    return torch.stack(out)  # (T, P): the projected gradients


def test_mean_is_the_average_gradient():
    J = jacobian(4, 9)
    assert torch.allclose(Mean()(J), J.mean(0), rtol=1e-15, atol=1e-15)


def test_pcgrad_from_the_gramian_equals_projecting_the_vectors():
    J = conflicting(4, 5)
    pc = PCGrad(seed=3)
    d = pc(J)
    assert all(sorted(o) == [j for j in range(4) if j != i] for i, o in enumerate(pc.last_order))
    assert relative_error([d], [direct_pcgrad(J, pc.last_order).sum(0)]) <= 1e-12
    orders = [PCGrad(seed=3).__call__(J) for _ in range(2)]
    assert torch.equal(orders[0], orders[1])  # the seed fixes the order


def test_pcgrad_two_conflicting_gradients_end_up_without_conflict():
    J = torch.tensor([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3]], dtype=D)  # g1 . g2 < 0
    pc = PCGrad(seed=0)
    d = pc(J)
    projected = direct_pcgrad(J, pc.last_order)
    assert abs(projected[0] @ J[1]) < 1e-14 and abs(projected[1] @ J[0]) < 1e-14  # each is normal to the other
    assert projected[0] @ projected[1] >= 0  # = -g1.g2 (1 - cos^2) >= 0
    assert torch.allclose(d, projected.sum(0), rtol=1e-14, atol=0)


def test_pcgrad_three_tasks_each_projection_agrees_with_its_last_partner():
    """The property one can prove for T > 2: after the last projection, g_i^PC . g_last >= 0 (Yu et al., Alg. 1)."""
    for seed in range(5):
        J = conflicting(3, 4, seed)
        pc = PCGrad(seed=seed)
        pc(J)
        projected = direct_pcgrad(J, pc.last_order)
        for i, order in enumerate(pc.last_order):
            assert projected[i] @ J[order[-1]] >= -1e-12


def test_pcgrad_leaves_non_conflicting_gradients_unchanged():
    J = jacobian(4, 6).abs()  # all inner products > 0
    assert torch.allclose(PCGrad(seed=1)(J), J.sum(0), rtol=1e-15, atol=0)


def mgda_grid(J, n):
    """Brute force: the min-norm point over a grid of the 2-simplex (T = 3) with spacing 1/n."""
    best, arg = math.inf, None
    for i in range(n + 1):
        a = torch.arange(n - i + 1, dtype=D) / n  # (m,)
        w = torch.stack([torch.full_like(a, i / n), a, 1 - i / n - a], 1)  # (m, 3)
        norms = (w @ J).norm(dim=1)  # (m,)
        k = int(norms.argmin())
        if norms[k] < best:
            best, arg = norms[k].item(), w[k]
    return best, arg


def test_mgda_two_tasks_is_the_closed_form_min_norm_point():
    for seed in range(4):
        J = conflicting(2, 5, seed)
        g1, g2 = J
        gamma = ((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1)
        w = MGDA().weights(gramian(J))
        assert torch.allclose(w, torch.stack([gamma, 1 - gamma]), rtol=0, atol=1e-15)
        assert torch.allclose(MGDA()(J), gamma * g1 + (1 - gamma) * g2, rtol=1e-14, atol=1e-15)
    same = torch.ones(2, 3, dtype=D)  # g1 = g2: every gamma is optimal; 1/2 is returned
    assert torch.equal(MGDA().weights(gramian(same)), torch.tensor([0.5, 0.5], dtype=D))


@pytest.mark.parametrize("J", [conflicting(3, 4, 0), conflicting(3, 4, 2),  # optimum on an edge; inside
                               torch.tensor([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0], [1.0, 0.0, -1.2]], dtype=D)])
def test_mgda_frank_wolfe_satisfies_the_optimality_conditions_and_beats_a_grid(J):
    w = MGDA(max_iter=5000, tol=0.0).weights(gramian(J))
    assert (w >= 0).all() and abs(w.sum().item() - 1) < 1e-14
    d = w @ J  # (P,): the min-norm point
    sq = d @ d
    inner = J @ d  # (T,): g_i . d
    assert (inner >= sq - 1e-10 * sq).all()  # d . g_i >= ||d||^2: no vertex decreases the norm
    assert ((inner - sq).abs() <= 1e-10 * sq)[w > 0].all()  # equality on the support
    best, _ = mgda_grid(J, 300)
    assert d.norm().item() <= best + 1e-12
    w = MGDA().weights(gramian(J))  # the paper's 250 steps / 1e-5 stop
    assert (J @ (w @ J) >= (w @ J).pow(2).sum() * (1 - 1e-4)).all()


def cagrad_objective(w, J, c):
    """``F(w) = g_w . g_0 + c ||g_0|| ||g_w||`` for weights w (..., T)."""
    g0 = J.mean(0)  # (P,)
    gw = w @ J  # (..., P)
    return gw @ g0 + c * g0.norm() * gw.norm(dim=-1)  # (...,)


def test_cagrad_with_c_zero_is_mean_exactly():
    J = conflicting(3, 5)
    assert torch.equal(CAGrad(c=0.0).weights(gramian(J)), Mean().weights(gramian(J)))
    assert torch.equal(CAGrad(c=0)(J), Mean()(J))


@pytest.mark.parametrize("c", [0.2, 0.5, 2.0])
def test_cagrad_minimises_its_inner_objective_and_matches_the_direct_formula(c):
    for seed in range(3):
        J = conflicting(2, 5, seed)
        agg = CAGrad(c=c, rescale=0)
        w = agg.inner_weights(gramian(J))
        grid = torch.linspace(0, 1, 20001, dtype=D)  # (n,)
        values = cagrad_objective(torch.stack([grid, 1 - grid], 1), J, c)  # (n,)
        assert cagrad_objective(w, J, c) <= values.min() + 1e-12 * values.abs().max()
        g0, gw = J.mean(0), w @ J
        d = g0 + c * g0.norm() / gw.norm() * gw  # Liu et al. 2021, Alg. 1
        assert relative_error([agg(J)], [d]) <= 1e-12
        assert relative_error([CAGrad(c=c, rescale=1)(J)], [d / (1 + c ** 2)]) <= 1e-12
        assert relative_error([CAGrad(c=c, rescale=2)(J)], [d / (1 + c)]) <= 1e-12
        # the update maximises the worst task's improvement within the ball ||d - g0|| <= c ||g0||
        u = torch.randn(1000, J.shape[1], generator=rng(seed), dtype=D)  # (n, P)
        others = g0 + c * g0.norm() * u / u.norm(dim=1, keepdim=True)  # (n, P): on the ball's sphere
        assert ((others @ J.T).min(1).values <= (J @ d).min() + 1e-12).all()


def test_cagrad_three_tasks_satisfies_the_optimality_conditions():
    J = conflicting(3, 4)
    c = 0.5
    w = CAGrad(c=c).inner_weights(gramian(J))
    g0, gw = J.mean(0), w @ J
    grad = J @ g0 + c * g0.norm() * (J @ gw) / gw.norm()  # (T,): dF/dw
    lam = w @ grad
    assert (grad >= lam - 1e-9).all() and ((grad - lam).abs() <= 1e-9)[w > 1e-9].all()


def test_upgrad_conflicts_with_no_task_and_its_projections_are_the_projections_onto_the_dual_cone():
    for T, P, seed in [(2, 4, 0), (3, 4, 1), (5, 8, 2), (6, 3, 3)]:  # (6, 3): rank-deficient Gramian
        J = conflicting(T, P, seed)
        up = UPGrad()
        d = up(J)
        assert (J @ d >= -1e-12 * J.norm() ** 2).all()  # the defining property: d . g_i >= 0
        V = up.projections(gramian(J))  # (T, T)
        assert relative_error([d], [(V @ J).mean(0)]) <= 1e-12
        for i in range(T):  # projection of g_i onto {x : J x >= 0}, checked on the vectors (primal KKT)
            pi = V[i] @ J  # (P,)
            mu = V[i] - torch.eye(T, dtype=D)[i]  # (T,): g_i - pi = -J^T mu
            scale = J.norm() ** 2
            assert (J @ pi >= -1e-10 * scale).all() and (mu >= -1e-10).all()  # feasible; multipliers >= 0
            assert ((mu * (J @ pi)).abs() <= 1e-10 * scale).all()  # complementary slackness
            assert torch.allclose(J[i] - pi, -mu @ J, rtol=0, atol=1e-12 * J.norm())


def test_upgrad_on_a_float32_gramian_of_low_rank_conflicts_with_no_task(recwarn):
    """More tasks than gradient directions, in float32: the rounded Gramian is slightly indefinite."""
    for seed in range(3):
        J = (jacobian(20, 10, seed) * torch.rand(20, 1, generator=rng(seed), dtype=D) * 10).float()  # (T, P)
        J[1] = -J[0]
        d = UPGrad()(J).double()
        assert (J.double() @ d >= -1e-4 * J.double().norm() ** 2).all()
    assert not recwarn.list


def test_upgrad_is_mean_when_no_gradients_conflict():
    J = jacobian(4, 6).abs()
    assert torch.equal(UPGrad().weights(gramian(J)), Mean().weights(gramian(J)))


def test_imtlg_has_equal_projections_on_the_unit_gradients_and_matches_the_paper_closed_form():
    J = conflicting(4, 7)
    a = IMTLG().weights(gramian(J))
    d = a @ J
    u = J / J.norm(dim=1, keepdim=True)  # (T, P)
    proj = u @ d  # (T,)
    assert abs(a.sum().item() - 1) < 1e-14 and (proj - proj[0]).abs().max() <= 1e-12 * proj.abs().max()
    D_, U_ = J[:1] - J[1:], u[:1] - u[1:]  # (T-1, P): the closed form of Liu et al. 2021b
    tail = J[0] @ U_.T @ torch.linalg.inv(D_ @ U_.T)  # (T-1,)
    assert torch.allclose(a, torch.cat([1 - tail.sum(0, keepdim=True), tail]), rtol=0, atol=1e-12)


def test_nonneg_qp_satisfies_the_kkt_conditions():
    for T, P, seed in [(4, 10, 0), (8, 5, 1), (12, 30, 2)]:
        A = jacobian(T, P, seed, shift=0.3)
        G = A @ A.T  # (T, T), rank min(T, P)
        Q = torch.randn(3, P, generator=rng(seed), dtype=D) @ A.T  # (3, T): in G's range
        X = nonneg_qp(G, Q)
        Y = X @ G + Q  # (3, T)
        tol = 1e-10 * G.abs().max()
        assert (X >= -1e-10).all() and (Y >= -tol).all() and ((X * Y).abs() <= tol).all()


def test_aggregators_weights_from_the_gramian_give_the_aggregate_of_the_jacobian():
    J = conflicting(4, 7)
    for agg in (Mean(), PCGrad(seed=0), MGDA(), CAGrad(), UPGrad(), IMTLG()):
        w = agg.weights(gramian(J))
        if isinstance(agg, PCGrad):
            agg = PCGrad(seed=0)
        assert w.shape == (4,) and relative_error([agg(J)], [w @ J]) <= 1e-12
        single = agg(J[:1])  # one task: a multiple of its gradient
        assert torch.allclose(single / single.norm(), J[0] / J[0].norm(), rtol=0, atol=1e-12)


def test_project_simplex():
    v = torch.tensor([0.5, 2.0, -1.0, 0.1], dtype=D)
    w = project_simplex(v)
    assert abs(w.sum().item() - 1) < 1e-15 and (w >= 0).all()
    grid = [torch.tensor(p, dtype=D) for p in itertools.product(torch.linspace(0, 1, 21).tolist(), repeat=4)
            if abs(sum(p) - 1) < 1e-9]
    assert all((w - v).norm() <= (p - v).norm() + 1e-12 for p in grid)


# -------------------------------------------------------------------------------------------------- mtl_backward

def fresh(seed=0):
    model, x, ys = mlp_model(seed=seed)
    losses, z = model.losses(x, ys)
    return model, losses, z


@pytest.mark.parametrize("agg, one_pass", [(Mean(), True), (MGDA(), True), (CAGrad(), True), (UPGrad(), True),
                                           (IMTLG(), True), (UPGrad(), False)])
def test_mtl_backward_gives_the_aggregate_to_the_trunk_and_each_head_its_own_gradient(agg, one_pass):
    model, losses, _ = fresh()
    trunk = list(model.trunk.parameters())
    J = reference_jacobian(losses, trunk)  # (T, P)
    heads = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(h.parameters()), retain_graph=True)])
             for loss, h in zip(losses, model.heads)]
    w = mtl_backward(losses, trunk, agg, one_pass=one_pass)
    assert w.shape == (3,) and not w.requires_grad
    got = torch.cat([p.grad.flatten() for p in trunk])
    assert relative_error([got], [agg(J)]) <= 1e-10 and relative_error([got], [w @ J]) <= 1e-10
    for h, want in zip(model.heads, heads):
        assert relative_error([torch.cat([p.grad.flatten() for p in h.parameters()])], [want]) <= 1e-12


def test_mtl_backward_accumulates_into_existing_grads_and_takes_explicit_task_params():
    model, losses, _ = fresh()
    trunk = list(model.trunk.parameters())
    heads = list(model.heads.parameters())
    want_trunk = UPGrad()(reference_jacobian(losses, trunk))
    want_heads = torch.autograd.grad(losses.sum(), heads, retain_graph=True)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    mtl_backward(losses, trunk, UPGrad(), tasks_params=heads)
    assert relative_error([torch.cat([p.grad.flatten() for p in trunk]) - 1], [want_trunk]) <= 1e-10
    assert relative_error([p.grad - 1 for p in heads], list(want_heads)) <= 1e-12


def test_task_leaves_are_the_heads_parameters():
    model, losses, _ = fresh()
    found = task_leaves(losses, exclude=list(model.trunk.parameters()))
    assert {id(p) for p in found} == {id(p) for p in model.heads.parameters()} and len(found) == 6


def test_mtl_backward_leaves_unreached_shared_parameters_alone():
    model, losses, _ = fresh()
    unused = nn.Parameter(torch.zeros(3, dtype=D))
    mtl_backward(losses, list(model.trunk.parameters()) + [unused], Mean())
    assert unused.grad is None and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("one_pass", [True, False])
def test_mtl_backward_with_features_weights_from_the_representation(one_pass):
    model, losses, z = fresh()
    trunk = list(model.trunk.parameters())
    Jz = reference_jacobian(losses, [z])  # (T, batch * width)
    w_want = MGDA().weights(Jz @ Jz.T)  # MGDA-UB
    shared_want = torch.autograd.grad(w_want @ losses, trunk, retain_graph=True)
    heads_want = [torch.autograd.grad(loss, list(h.parameters()), retain_graph=True)
                  for loss, h in zip(losses, model.heads)]
    w = mtl_backward(losses, trunk, MGDA(), features=z, one_pass=one_pass)
    assert torch.allclose(w, w_want, rtol=0, atol=1e-14)
    assert relative_error([p.grad for p in trunk], list(shared_want)) <= 1e-10
    for h, want in zip(model.heads, heads_want):
        assert relative_error([p.grad for p in h.parameters()], list(want)) <= 1e-12


# ------------------------------------------------------------------------------------------------------ bad input

def grads_of(model):
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("make_losses, error, match", [
    (lambda l: l[None], ValueError, r"losses must be a 1-D tensor.*shape \(1, 3\)"),
    (lambda l: l.sum(), ValueError, r"losses must be a 1-D tensor.*shape \(\)"),
    (lambda l: [l[0], l[1:]], ValueError, r"losses\[1\] must be a scalar tensor"),
    (lambda l: l[:0], ValueError, "losses is empty"),
    (lambda l: [], ValueError, "losses is empty"),
    (lambda l: l.detach(), ValueError, "losses do not require grad"),
    (lambda l: "loss", ValueError, "losses must be a 1-D tensor .* got str"),
    (lambda l: l * torch.tensor([1.0, math.nan, 1.0], dtype=D), FloatingPointError, r"losses\[1\] \(task 1\)"),
    (lambda l: l * torch.tensor([1.0, 1.0, math.inf], dtype=D), FloatingPointError, r"losses\[2\] \(task 2\)"),
])
def test_bad_losses_name_the_argument_and_change_nothing(make_losses, error, match):
    model, losses, _ = fresh()
    bad = make_losses(losses)
    trunk = list(model.trunk.parameters())
    with pytest.raises(error, match=match):
        task_jacobian(bad, trunk)
    before = grads_of(model)
    with pytest.raises(error, match=match):
        mtl_backward(bad, trunk, UPGrad())
    assert all(b is None for b in before) and all(g is None for g in grads_of(model))


@pytest.mark.parametrize("make_inputs, match", [
    (lambda m: [], "shared is empty"),
    (lambda m: [torch.ones(3, dtype=D)], r"shared\[0\] \(shape \(3,\)\) does not require grad"),
    (lambda m: [m.trunk[0].weight, "bias"], r"shared\[1\] must be a tensor"),
    (lambda m: 3, "shared must be a tensor or an iterable of tensors"),
])
def test_bad_inputs_name_the_argument_and_change_nothing(make_inputs, match):
    model, losses, _ = fresh()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = grads_of(model)
    with pytest.raises(ValueError, match=match):
        mtl_backward(losses, make_inputs(model), Mean())
    with pytest.raises(ValueError, match=match.replace("shared", "inputs")):
        task_jacobian(losses, make_inputs(model))
    assert all(torch.equal(a, b) for a, b in zip(before, grads_of(model)))


def test_other_bad_arguments_of_mtl_backward_change_nothing():
    model, losses, z = fresh()
    trunk = list(model.trunk.parameters())
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = grads_of(model)
    with pytest.raises(ValueError, match="aggregator must have a weights"):
        mtl_backward(losses, trunk, "upgrad")
    with pytest.raises(ValueError, match=r"tasks_params\[0\] is also in shared"):
        mtl_backward(losses, trunk, Mean(), tasks_params=trunk[:1])
    with pytest.raises(ValueError, match="no loss depends on shared"):
        mtl_backward(losses, [nn.Parameter(torch.ones(2, dtype=D))], Mean())
    with pytest.raises(ValueError, match=r"features\[0\] .* does not require grad"):
        mtl_backward(losses, trunk, MGDA(), features=z.detach())
    assert all(torch.equal(a, b) for a, b in zip(before, grads_of(model)))


@pytest.mark.parametrize("bad, error, match", [
    (torch.ones(2, 3, dtype=D), ValueError, r"gramian must be a square \(T, T\) tensor"),
    (torch.ones(3, dtype=D), ValueError, r"gramian must be a square"),
    (torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=D), ValueError, "gramian must be symmetric"),
    (torch.tensor([[1.0, math.nan], [math.nan, 1.0]], dtype=D), FloatingPointError, "gramian holds a non-finite"),
    (torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=D), ValueError, "gramian has a negative diagonal"),
    (torch.ones(2, 2, dtype=torch.int64), ValueError, "gramian must hold floating-point"),
])
def test_bad_gramian(bad, error, match):
    for agg in (Mean(), PCGrad(), MGDA(), CAGrad(), UPGrad(), IMTLG()):
        with pytest.raises(error, match=match):
            agg.weights(bad)


@pytest.mark.parametrize("bad, error, match", [
    (torch.ones(3, dtype=D), ValueError, r"jacobian must be a 2-D tensor \(tasks, parameters\)"),
    (torch.ones(0, 4, dtype=D), ValueError, "with at least one task"),
    (torch.tensor([[1.0, 2.0], [math.inf, 0.0]], dtype=D), FloatingPointError, r"row 1 \(task 1's gradient\)"),
])
def test_bad_jacobian(bad, error, match):
    with pytest.raises(error, match=match):
        UPGrad()(bad)


@pytest.mark.parametrize("make, match", [
    (lambda: MGDA(max_iter=0), "max_iter must be an int >= 1"),
    (lambda: MGDA(tol=-1.0), "tol must be a finite real number >= 0"),
    (lambda: CAGrad(c=-0.5), "c must be a finite real number >= 0"),
    (lambda: CAGrad(c=math.inf), "c must be a finite real number >= 0"),
    (lambda: CAGrad(max_iter=2.5), "max_iter must be an int >= 1"),
    (lambda: CAGrad(rescale=3), "rescale must be 0"),
    (lambda: UPGrad(reg_eps=-1.0), "reg_eps must be a finite real number >= 0"),
    (lambda: IMTLG(rtol="0"), "rtol must be a finite real number >= 0"),
])
def test_bad_aggregator_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_check_gramian_accepts_float32_rounding():
    J = jacobian(3, 1000).float()
    G = check_gramian(J @ J.T)
    assert G.dtype == D and torch.equal(G, G.T)


# ------------------------------------------------------------------------------------------------------ benchmark

def test_benchmark_smoke_run_checks_the_routes_and_writes_a_record(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "multitask_grads.py"
    spec = importlib.util.spec_from_file_location("multitask_grads", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        returned = module.main(["--tiny", "--quick", "--threads", "1", "--tasks", "2", "3", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "benchmark_multitask_grads.json").read_text())
    assert record["metrics"] == returned["metrics"] and record["mode"] == "tiny"
    assert all(field in record for field in PROVENANCE_FIELDS)
    for trunk, T in itertools.product(("mlp", "conv4"), (2, 3)):
        key = f"{trunk}/T{T}/threads1"
        assert all(record["metrics"][f"{key}/{route}_ms"] > 0 for route in module.ROUTES)
        assert all(record["metrics"][f"{key}/rel_err_{route}"] <= 1e-5 for route in module.ROUTES[1:])
        achieved = record["metrics"][f"{key}/gflop"] / record["metrics"][f"{key}/loop_ms"] * 1e3  # GFLOP/s
        bound = record["metrics"]["peak_gflops/threads1"] / achieved
        assert record["metrics"][f"{key}/speedup_bound"] == pytest.approx(bound, rel=1e-2)
    # the FLOPs counted for the tiny MLP (8-32-32, batch 16, Linear(32, 1) heads), by hand: per task, the head's
    # input gradient 2*16*1*32, layer 2's weight gradient and input gradient 2 * 2*32*16*32, layer 1's weight
    # gradient 2*32*16*8 (no gradient w.r.t. x)
    per_task = 2 * 16 * 1 * 32 + 2 * (2 * 32 * 16 * 32) + 2 * 32 * 16 * 8
    for T in (2, 3):
        assert record["metrics"][f"mlp/T{T}/threads1/gflop"] == pytest.approx(T * per_task / 1e9, rel=1e-12)


def test_every_aggregator_has_a_readable_repr_and_the_base_cannot_be_built():
    from mapping.multitask import CAGrad, IMTLG, MGDA, Aggregator, Mean, PCGrad, UPGrad
    assert repr(Mean()) == "Mean()" and repr(CAGrad(c=0.2)).startswith("CAGrad(c=0.2")
    for aggregator in (PCGrad(), MGDA(), UPGrad(), IMTLG()):
        assert repr(aggregator).startswith(type(aggregator).__name__ + "(")
    with pytest.raises(TypeError):
        Aggregator()
