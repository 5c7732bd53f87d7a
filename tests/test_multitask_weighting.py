"""Loss weightings against hand computations of their papers' formulas, GradNorm's behaviour, and bad input."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.multitask.architectures import HardSharing, task_losses
from mapping.multitask.weighting import (FAMO, DynamicWeightAverage, EqualWeighting, GradNorm, RandomWeighting,
                                         UncertaintyWeighting)

D = torch.float64


def losses_of(*values, grad=False):
    return torch.tensor(values, dtype=D, requires_grad=grad)


def test_equal_weighting_is_the_sum():
    losses = losses_of(0.5, 2.0, 3.25, grad=True)
    total = EqualWeighting(3)(losses)
    assert total.item() == 5.75
    total.backward()
    assert torch.equal(losses.grad, torch.ones(3, dtype=D))


def test_random_weights_are_positive_sum_as_documented_differ_per_call_and_follow_the_seed():
    losses = losses_of(1.0, 2.0, 3.0, 4.0)
    for total, rlw in ((1.0, RandomWeighting(4, seed=0)), (4.0, RandomWeighting(4, seed=0, total=4))):
        draws = []
        for _ in range(5):
            value = rlw(losses)
            w = rlw.weights
            assert (w > 0).all() and math.isclose(w.sum().item(), total, rel_tol=1e-12)
            assert math.isclose(value.item(), (w * losses).sum().item(), rel_tol=1e-12)
            draws.append(w / total)
        assert all(not torch.allclose(a, b) for a, b in itertools.pairwise(draws))
        again = RandomWeighting(4, seed=0)
        for w in draws:
            again(losses)
            torch.testing.assert_close(again.weights, w, rtol=1e-12, atol=0)
    g = torch.Generator().manual_seed(0)  # the paper's draw: softmax of a standard normal
    torch.testing.assert_close(draws[0], F.softmax(torch.randn(4, generator=g, dtype=D), 0), rtol=1e-12, atol=0)


def test_uncertainty_gradient_matches_autograd_closed_form_and_finite_difference():
    losses = losses_of(0.3, 2.0, 5.0)
    uw = UncertaintyWeighting(3).double()
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.2, -0.4, 1.1]))
    total = uw(losses)
    s = uw.log_vars.detach().clone()
    torch.testing.assert_close(total, (torch.exp(-s) * losses + s).sum(), rtol=1e-14, atol=0)
    (grad,) = torch.autograd.grad(total, uw.log_vars)
    closed = -torch.exp(-s) * losses + 1  # d/ds_i [exp(-s_i) L_i + s_i]
    torch.testing.assert_close(grad, closed, rtol=1e-13, atol=0)
    eps = 1e-6
    for i in range(3):
        e = torch.zeros(3, dtype=D)
        e[i] = eps
        f = [(torch.exp(-(s + h)) * losses + s + h).sum() for h in (e, -e)]
        assert abs((f[0] - f[1]).item() / (2 * eps) - closed[i].item()) <= 1e-8
    torch.testing.assert_close(uw.weights, torch.exp(-s), rtol=0, atol=0)


def test_uncertainty_minimiser_is_the_log_loss():
    losses = losses_of(0.3, 2.0, 5.0)
    uw = UncertaintyWeighting(3).double()
    with torch.no_grad():
        uw.log_vars.copy_(losses.log())
    (grad,) = torch.autograd.grad(uw(losses), uw.log_vars)
    assert grad.abs().max() <= 1e-14
    best = uw(losses).item()
    for delta in (-0.1, 0.1):
        with torch.no_grad():
            uw.log_vars.copy_(losses.log() + delta)
        assert uw(losses).item() > best
    uw = UncertaintyWeighting(3).double()  # and gradient descent on s alone finds it
    opt = torch.optim.SGD(uw.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        uw(losses).backward()
        opt.step()
    torch.testing.assert_close(uw.log_vars.detach(), losses.log(), rtol=0, atol=1e-8)


def toy_two_tasks(seed, swap=False):
    """One linear trunk, two linear heads; both targets share a signal, the second adds noise (slower to fall)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g, dtype=D)
    clean = x @ torch.randn(4, generator=g, dtype=D)  # (64,)
    noisy = clean + torch.randn(64, generator=g, dtype=D)  # (64,)
    targets = {"0": noisy, "1": clean} if swap else {"0": clean, "1": noisy}
    torch.manual_seed(seed)
    model = HardSharing(nn.Linear(4, 8), [nn.Linear(8, 1), nn.Linear(8, 1)]).double()
    return model, x, targets


def mse(output, y):
    return ((output.squeeze(-1) - y) ** 2).mean()


def gradnorm_run(seed, swap=False, steps=50):
    model, x, targets = toy_two_tasks(seed, swap)
    gn = GradNorm(2, alpha=1.5).double()
    opt = torch.optim.SGD([{"params": model.parameters()}, {"params": gn.parameters(), "lr": 0.025}], lr=0.05)
    weights, ratios = [], []
    for _ in range(steps):
        losses = task_losses(model(x), targets, mse)
        total = gn(losses, shared=model.trunk.parameters())
        opt.zero_grad()
        total.backward()
        opt.step()
        weights.append(gn.weights)
        ratios.append(losses.detach() / gn.initial_losses)
    gn.renormalise()
    assert (gn.w > 0).all() and math.isclose(gn.w.sum().item(), 2, rel_tol=1e-12)
    return torch.stack(weights), torch.stack(ratios)  # (steps, 2) each


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradnorm_weights_stay_positive_sum_to_T_and_move_to_the_slower_task(seed):
    for swap in (False, True):
        weights, ratios = gradnorm_run(seed, swap)
        slow, fast = (0, 1) if swap else (1, 0)
        assert (weights > 0).all() and (weights.sum(1) - 2).abs().max() <= 1e-12
        assert ratios[-1, slow] > 100 * ratios[-1, fast]  # the noisy task's loss does fall more slowly
        assert weights[-1, slow] > 1.05 and weights[-1, fast] < 0.95


def test_gradnorm_gives_the_weights_the_gradient_of_L_grad_and_the_network_the_weighted_loss():
    model, x, targets = toy_two_tasks(0)
    gn = GradNorm(2, alpha=1.5).double()
    with torch.no_grad():
        gn.w.copy_(torch.tensor([0.5, 2.5]))  # renormalised to sum 2 by the call: [1/3, 5/3]
    gn.initial_losses = torch.tensor([4.0, 3.0], dtype=D)
    losses = task_losses(model(x), targets, mse)
    W = list(model.trunk.parameters())
    norms = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(losses[i], W, retain_graph=True)]).norm()
                         for i in range(2)])
    total = gn(losses, shared=W)
    w = torch.tensor([1 / 3, 5 / 3], dtype=D)
    torch.testing.assert_close(gn.weights, w, rtol=1e-15, atol=0)
    torch.testing.assert_close(total, (w * losses).sum(), rtol=1e-15, atol=0)  # its value: the weighted loss
    total.backward()
    G = w * norms
    ratio = losses.detach() / torch.tensor([4.0, 3.0], dtype=D)
    target = G.mean() * (ratio / ratio.mean()) ** 1.5
    torch.testing.assert_close(gn.grad_loss, (G - target).abs().sum(), rtol=1e-13, atol=0)
    torch.testing.assert_close(gn.w.grad, torch.sign(G - target) * norms, rtol=1e-13, atol=0)  # d L_grad / d w
    want = torch.autograd.grad((w * task_losses(model(x), targets, mse)).sum(), list(model.parameters()))
    for p, g in zip(model.parameters(), want):
        torch.testing.assert_close(p.grad, g, rtol=1e-13, atol=0)  # L_grad does not reach the network


def test_dwa_weights_follow_eq_1_from_epoch_averages():
    dwa = DynamicWeightAverage(3, temperature=2.0)
    epochs = [[(3.0, 2.0, 1.0), (1.0, 2.0, 3.0)], [(1.0, 1.0, 1.0), (1.0, 3.0, 1.0)],
              [(0.5, 2.0, 0.5), (0.5, 1.0, 1.5)], [(0.2, 1.0, 1.0)]]
    averages, seen = [], []
    for epoch in epochs:
        for values in epoch:
            dwa(losses_of(*values))
            seen.append(dwa.weights)
        averages.append(torch.tensor(epoch, dtype=D).mean(0))
        torch.testing.assert_close(dwa.end_epoch(), averages[-1], rtol=1e-15, atol=0)
    ones = torch.ones(3, dtype=D)
    for w in seen[:4]:  # epochs 1 and 2
        torch.testing.assert_close(w, ones, rtol=0, atol=0)
    for t, w in ((2, seen[4]), (2, seen[5]), (3, seen[6])):  # epoch t+1 uses r = L(t) / L(t-1)
        r = averages[t - 1] / averages[t - 2]
        e = torch.exp(r / 2.0)
        torch.testing.assert_close(w, 3 * e / e.sum(), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="end_epoch"):
        dwa.end_epoch()  # the epoch just closed saw no losses


def famo_problem():
    """Two quadratic task losses of a parameter vector theta, bounded below by 0.5 and 0.1."""
    def losses(theta):
        return torch.stack([(theta[0] - 1) ** 2 + 0.5, 3 * (theta[1] + 2) ** 2 + 0.1 + theta[0] ** 2])
    return losses, torch.tensor([0.3, 0.7], dtype=D)


def test_famo_two_steps_match_a_hand_computation_of_algorithm_1():
    loss_fn, theta0 = famo_problem()
    alpha, beta, gamma = 0.05, 0.5, 0.1
    famo = FAMO(2, lr=beta, gamma=gamma, eps=0.0)
    theta = theta0.clone().requires_grad_()
    opt = torch.optim.SGD([theta], lr=alpha)
    xi, th = torch.zeros(2, dtype=D), theta0.clone()
    for _ in range(2):
        # by hand: Alg. 1 (z, c, the update d of theta, delta, the step on xi)
        ell = loss_fn(th)
        z = torch.exp(xi) / torch.exp(xi).sum()
        c = 1 / (z / ell).sum()
        grads = torch.autograd.functional.jacobian(loss_fn, th)  # (2 tasks, 2 params)
        d = sum(c * z[i] / ell[i] * grads[i] for i in range(2))
        th_next = th - alpha * d
        delta = ell.log() - loss_fn(th_next).log()
        J = torch.autograd.functional.jacobian(lambda v: F.softmax(v, 0), xi)  # (2, 2) dz/dxi
        xi = xi - beta * (J.T @ delta + gamma * xi)
        # mapping
        total = famo(loss_fn(theta))
        torch.testing.assert_close(famo.weights, c * z / ell, rtol=1e-14, atol=0)
        opt.zero_grad()
        total.backward()
        opt.step()
        torch.testing.assert_close(theta.detach(), th_next, rtol=1e-14, atol=0)
        with torch.no_grad():
            famo.update(loss_fn(theta))
        torch.testing.assert_close(famo.logits, xi, rtol=1e-13, atol=1e-16)
        th = th_next
    assert famo.logits.abs().min() > 1e-3  # the logits did move


def test_famo_with_adam_matches_the_official_update():
    """``adam=True`` against the official code: Adam(lr, weight_decay=gamma) on the softmax's VJP with delta."""
    loss_fn, theta0 = famo_problem()
    famo = FAMO(2, lr=0.025, gamma=1e-3, min_losses=[0.5, 0.1], adam=True)
    w = torch.zeros(2, dtype=D, requires_grad=True)
    w_opt = torch.optim.Adam([w], lr=0.025, weight_decay=1e-3)
    theta = theta0.clone().requires_grad_()
    opt = torch.optim.SGD([theta], lr=0.05)
    for _ in range(4):
        before = loss_fn(theta)
        total = famo(before)
        opt.zero_grad()
        total.backward()
        opt.step()
        after = loss_fn(theta).detach()
        with torch.no_grad():
            famo.update(after)
        m = torch.tensor([0.5, 0.1], dtype=D)
        delta = (before.detach() - m + 1e-8).log() - (after - m + 1e-8).log()
        w.grad = torch.autograd.grad(F.softmax(w, -1), w, grad_outputs=delta)[0]
        w_opt.step()
        torch.testing.assert_close(famo.logits, w.detach(), rtol=1e-12, atol=1e-15)


def all_weightings(t=3):
    return [EqualWeighting(t), RandomWeighting(t, seed=0), UncertaintyWeighting(t).double(),
            DynamicWeightAverage(t), FAMO(t)]


@pytest.mark.parametrize("bad, error, match", [
    (torch.ones(4, dtype=D), ValueError, r"losses must be a 1-D float tensor of shape \(3,\).*shape \(4,\)"),
    (torch.ones(1, 3, dtype=D), ValueError, r"losses must be a 1-D float tensor of shape \(3,\).*shape \(1, 3\)"),
    (torch.ones(3, dtype=torch.int64), ValueError, r"losses must be a 1-D float tensor.*int64"),
    ([1.0, 2.0, 3.0], ValueError, r"losses must be a 1-D float tensor.*got list"),
    (torch.tensor([1.0, float("nan"), 1.0], dtype=D), FloatingPointError, r"losses\[1\] is not finite"),
    (torch.tensor([1.0, 1.0, float("inf")], dtype=D), FloatingPointError, r"losses\[2\] is not finite"),
])
def test_bad_losses_are_named_and_change_no_state(bad, error, match):
    for weighting in all_weightings():
        with pytest.raises(error, match=match):
            weighting(bad)
        assert weighting.weights is None
    dwa, famo, rlw = DynamicWeightAverage(3), FAMO(3), RandomWeighting(3, seed=1)
    for weighting in (dwa, famo, rlw):
        with pytest.raises(error):
            weighting(bad)
    assert dwa._count == 0 and famo._before is None
    rlw(losses_of(1.0, 1.0, 1.0))
    fresh = RandomWeighting(3, seed=1)
    fresh(losses_of(1.0, 1.0, 1.0))
    assert torch.equal(rlw.weights, fresh.weights)  # the failing call drew nothing


def test_gradnorm_bad_input_leaves_initial_losses_and_weights_unset():
    model, x, targets = toy_two_tasks(0)
    gn = GradNorm(2).double()
    with torch.no_grad():
        gn.w.copy_(torch.tensor([3.0, 1.0]))
    good = task_losses(model(x), targets, mse)
    calls = [
        (lambda: gn(torch.stack([good[0], good[1], good[1]]), shared=model.trunk.parameters()),
         ValueError, r"losses must be .* shape \(2,\)"),
        (lambda: gn(good * torch.tensor([1.0, float("nan")], dtype=D), shared=model.trunk.parameters()),
         FloatingPointError, r"losses\[1\]"),
        (lambda: gn(good, shared=[]), ValueError, "shared must be the parameters of the last shared layer"),
        (lambda: gn(good, shared=nn.Linear(2, 2).double().parameters()), ValueError,
         r"losses\[0\] \(task 0\) does not depend on shared"),
        (lambda: gn(good.detach(), shared=model.trunk.parameters()), ValueError, "no autograd graph"),
        (lambda: gn(good * torch.tensor([0.0, 1.0], dtype=D), shared=model.trunk.parameters()), ValueError,
         r"losses\[0\] \(task 0\) is 0.0 at GradNorm's first call"),
    ]
    for call, error, match in calls:
        with pytest.raises(error, match=match):
            call()
        assert gn.initial_losses is None and gn.weights is None
        assert torch.equal(gn.w.detach(), torch.tensor([3.0, 1.0], dtype=D))  # not even renormalised
    gn(good, shared=model.trunk.parameters())
    torch.testing.assert_close(gn.initial_losses, good.detach(), rtol=0, atol=0)


def test_non_finite_weights_are_named():
    losses = losses_of(1.0, 2.0, 3.0)
    uw = UncertaintyWeighting(3).double()
    with torch.no_grad():
        uw.log_vars[2] = float("nan")
    with pytest.raises(FloatingPointError, match=r"log_vars\[2\] is not finite"):
        uw(losses)
    model, x, targets = toy_two_tasks(0)
    gn = GradNorm(2).double()
    with torch.no_grad():
        gn.w[1] = float("inf")
    with pytest.raises(FloatingPointError, match=r"weights\[1\] is not finite"):
        gn(task_losses(model(x), targets, mse), shared=model.trunk.parameters())
    famo = FAMO(3)
    famo.logits[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"logits\[0\] is not finite"):
        famo(losses)
    dwa = DynamicWeightAverage(3)
    for values in ((0.0, 1.0, 1.0), (1.0, 1.0, 1.0)):  # epoch average 0 for task 0, then r_0 = inf
        dwa(losses_of(*values))
        dwa.end_epoch()
    with pytest.raises(FloatingPointError, match=r"weights\[0\] is not finite"):
        dwa(losses)
    assert dwa._count == 0


def test_famo_rejects_losses_at_the_bound_and_update_without_forward():
    famo = FAMO(2, min_losses=[0.5, 0.0])
    with pytest.raises(ValueError, match="needs a forward"):
        famo.update(losses_of(1.0, 1.0))
    with pytest.raises(ValueError, match=r"losses\[0\] \(task 0\) = 0.4 is not above min_losses\[0\]"):
        famo(losses_of(0.4, 1.0))
    famo(losses_of(1.0, 1.0))
    with pytest.raises(FloatingPointError, match=r"losses_after\[1\]"):
        famo.update(losses_of(1.0, float("nan")))
    assert famo._before is not None and torch.equal(famo.logits, torch.zeros(2, dtype=D))
    famo.update(losses_of(0.9, 0.8))
    with pytest.raises(ValueError, match="needs a forward"):
        famo.update(losses_of(0.9, 0.8))  # one update per forward


@pytest.mark.parametrize("make", [EqualWeighting, RandomWeighting, UncertaintyWeighting, GradNorm,
                                  DynamicWeightAverage, FAMO])
def test_num_tasks_must_be_a_positive_int(make):
    for bad in (0, 2.0, True, "2"):
        with pytest.raises(ValueError, match="num_tasks must be an int >= 1"):
            make(bad)
