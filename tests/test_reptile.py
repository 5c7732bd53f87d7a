"""Reptile: the update's form and sign (erratum 1), convergence on quadratics, and §5's Taylor analysis."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.data import Sinusoid, TaskBatch
from mapping.meta import Reptile, adapted_params, article_reptile_update, functional, params_of, reptile_update
from mapping.meta.analysis import exact_gradients, flat_loss, taylor_errors
from mapping.nn import MLP, Point


def test_point_loss_is_the_quadratic_around_the_target():
    c = torch.tensor([3.0, -1.0])
    point = Point(torch.tensor([1.0, 1.0]))
    loss = F.mse_loss(point(torch.zeros(4, 7)), c.expand(4, -1))
    torch.testing.assert_close(loss, ((point.theta - c) ** 2).mean())
    assert torch.equal(Point(3).theta.detach(), torch.zeros(3))
    for bad in (0, 2.5, True, torch.zeros(2, 2)):
        with pytest.raises(ValueError, match="theta must be"):
            Point(bad)


def quadratic_tasks(optima, shots=4):
    """One task per row of ``optima`` (tasks, d): every target equals the optimum."""
    y = optima[:, None, :].expand(-1, shots, -1)  # (tasks, shots, d)
    x = torch.zeros_like(y)
    return TaskBatch(x[:, :2], y[:, :2], x[:, 2:], y[:, 2:])


def test_update_equals_theta_plus_beta_mean_of_differences(float64):
    torch.manual_seed(0)
    model = MLP((1, 8, 1), activation=nn.Tanh)
    batch = Sinusoid().sample(4, 5, 5, torch.Generator().manual_seed(0), dtype=torch.float64)
    before = {k: v.detach().clone() for k, v in params_of(model).items()}
    # independent reference: a Python loop of plain SGD steps per task with torch.autograd.grad
    adapted = []
    for t in range(4):
        x = torch.cat([batch.support_x[t], batch.query_x[t]])
        y = torch.cat([batch.support_y[t], batch.query_y[t]])
        fast = {k: v.clone().requires_grad_() for k, v in before.items()}
        for _ in range(3):
            loss = F.mse_loss(torch.func.functional_call(model, fast, (x,)), y)
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = {k: (v - 0.02 * g).detach().requires_grad_() for (k, v), g in zip(fast.items(), grads)}
        adapted.append(fast)
    beta = 0.7
    expected = {k: before[k] + beta * torch.stack([a[k] - before[k] for a in adapted]).mean(0) for k in before}
    reptile = Reptile(model, alpha=0.02, steps=3)
    reptile.meta_loss(batch, F.mse_loss).backward()
    torch.optim.SGD(model.parameters(), lr=beta).step()
    for k, v in params_of(model).items():
        torch.testing.assert_close(v.detach(), expected[k])


def run_updates(update, optima, theta0, iterations=60, beta=0.5, alpha=0.1, steps=5):
    model = Point(theta0)
    params = {"theta": model.theta.detach()}
    batch = quadratic_tasks(optima)
    x = torch.cat([batch.support_x, batch.query_x], 1)
    y = torch.cat([batch.support_y, batch.query_y], 1)
    distances = []
    for _ in range(iterations):
        fast, _ = adapted_params(functional(model), F.mse_loss, params, x, y, steps=steps, alpha=alpha)
        params = update(params, fast, beta)
        distances.append((params["theta"] - optima.mean(0)).norm().item())
    return params["theta"], distances


def test_reptile_approaches_the_task_optima_on_quadratics(float64):
    g = torch.Generator().manual_seed(0)
    optima = torch.randn(6, 3, generator=g) * 2  # (tasks, d)
    theta, distances = run_updates(reptile_update, optima, torch.full((3,), 10.0), iterations=150)
    # the point closest to all task optima (least mean squared distance) is their mean: Reptile gets there
    assert distances[-1] < 1e-6 < distances[0]
    assert all(b <= a + 1e-12 for a, b in zip(distances, distances[1:]))
    mean_sq = ((theta - optima) ** 2).sum(1).mean()
    start_sq = ((torch.full((3,), 10.0) - optima) ** 2).sum(1).mean()
    assert mean_sq < start_sq / 10


def test_article_sign_moves_away_from_the_adapted_weights(float64):
    """Erratum 1: theta <- theta + beta mean(theta - theta') walks away from the task optima."""
    g = torch.Generator().manual_seed(0)
    optima = torch.randn(6, 3, generator=g)
    _, distances = run_updates(article_reptile_update, optima, torch.full((3,), 1.0), iterations=20)
    assert distances[-1] > 10 * distances[0]
    assert all(b > a for a, b in zip(distances, distances[1:]))


def minibatch_losses(seed=0):
    torch.manual_seed(seed)
    model = MLP((1, 6, 1), activation=nn.Tanh)
    batch = Sinusoid().sample(1, 10, 10, torch.Generator().manual_seed(seed), dtype=torch.float64)
    loss1, phi = flat_loss(model, F.mse_loss, batch.support_x[0], batch.support_y[0])
    loss2, _ = flat_loss(model, F.mse_loss, batch.query_x[0], batch.query_y[0])
    return loss1, loss2, phi


@pytest.mark.parametrize("seed", [0, 1])
def test_taylor_expansion_error_shrinks_as_alpha_squared(float64, seed):
    loss1, loss2, phi = minibatch_losses(seed)
    alphas = [0.02, 0.01, 0.005]
    errors = taylor_errors(loss1, loss2, phi, alphas)
    for method, errs in errors.items():
        ratios = [a / b for a, b in zip(errs, errs[1:])]
        assert all(3.5 < r < 4.5 for r in ratios), (method, errs, ratios)


def test_reptile_direction_is_the_sum_of_the_two_gradients_to_zeroth_order(float64):
    loss1, loss2, phi = minibatch_losses()
    exact = exact_gradients([loss1, loss2], phi, 1e-7)
    g1, g2 = torch.func.grad(loss1)(phi), torch.func.grad(loss2)(phi)
    torch.testing.assert_close(exact["reptile"], g1 + g2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(exact["fomaml"], g2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [2, 3])
def test_expected_directions_for_k_steps(float64, k):
    """Average the exact directions over every sequence of k minibatches drawn with replacement from M."""
    import itertools
    from mapping.meta.analysis import expected_gradients
    torch.manual_seed(0)
    model = MLP((1, 5, 1), activation=nn.Tanh)
    data = Sinusoid().sample(1, 12, 1, torch.Generator().manual_seed(0), dtype=torch.float64)
    batches = [flat_loss(model, F.mse_loss, data.support_x[0, i::3], data.support_y[0, i::3]) for i in range(3)]
    losses, phi = [b[0] for b in batches], batches[0][1]
    avg_grad = torch.stack([torch.func.grad(L)(phi) for L in losses]).mean(0)
    avg_hess = torch.stack([torch.func.hessian(L)(phi) for L in losses]).mean(0)
    errors = []
    for alpha in (0.01, 0.005):
        seqs = list(itertools.product(losses, repeat=k))
        exact = [exact_gradients(list(seq), phi, alpha) for seq in seqs]
        predicted = expected_gradients(avg_grad, avg_hess @ avg_grad, alpha, k)
        errors.append({m: (torch.stack([e[m] for e in exact]).mean(0) - predicted[m]).norm().item() for m in predicted})
    for m in errors[0]:
        assert 3.3 < errors[0][m] / errors[1][m] < 4.7, (m, errors)


def test_adam_inner_loop_matches_torch_optim_adam_task_by_task(float64):
    """Reptile's inner Adam (beta1 = 0, fresh moments per task) under vmap, in chunks and in a loop, equals
    torch.optim.Adam run on each task separately, in float64."""
    from mapping.meta import adam_adapted_params
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    x, y = torch.randn(5, 6, 3), torch.randn(5, 6, 2)  # (tasks, shots, ...)
    params = dict(model.named_parameters())
    want = []
    for t in range(5):
        copy = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        opt = torch.optim.Adam(copy.values(), lr=0.05, betas=(0.0, 0.999), eps=1e-8)
        for _ in range(4):
            opt.zero_grad()
            F.mse_loss(torch.func.functional_call(model, copy, (x[t],)), y[t]).backward()
            opt.step()
        want.append(copy)
    for execution in ("vmap", "chunk", "loop"):
        fast, inner = adam_adapted_params(functional(model), F.mse_loss, params, x, y, steps=4, lr=0.05,
                                          execution=execution, chunk_size=2)
        assert inner.shape == (5, 4) and (inner[:, -1] < inner[:, 0]).all()
        for k in params:
            torch.testing.assert_close(fast[k], torch.stack([w[k].detach() for w in want]), rtol=1e-10, atol=1e-12)
    reptile = Reptile(model, alpha=0.05, steps=4, inner="adam")
    torch.testing.assert_close(reptile.adapted(x, y, F.mse_loss)[0]["0.weight"],
                               torch.stack([w["0.weight"].detach() for w in want]))
    with pytest.raises(ValueError, match="inner must be one of"):
        Reptile(model, inner="rmsprop")
    with pytest.raises(ValueError, match="betas must be two numbers"):
        Reptile(model, inner="adam", betas=(0.9,))
