"""inner_curvature: the head-only support loss of ANIL is quadratic, so its Hessian has a closed form and
alpha * lambda_max > 2 decides whether fine-tuning grows."""
import pytest
import torch
import torch.nn.functional as F

from mapping.data import Sinusoid
from mapping.meta import ANIL, MAML, adaptation_curve, functional, params_of
from mapping.meta.curvature import inner_curvature
from mapping.nn import sinusoid_mlp
from mapping.stats import diverged


def anil_and_tasks(tasks=6, k_shot=5):
    torch.manual_seed(0)
    net = sinusoid_mlp().double()
    batch = Sinusoid.maml().sample(tasks, k_shot=k_shot, q_query=20, generator=torch.Generator().manual_seed(1))
    return ANIL(net, alpha=0.01), net, batch.to("cpu", torch.float64)


def test_head_curvature_equals_the_closed_form_of_least_squares():
    anil, net, batch = anil_and_tasks()
    lam = inner_curvature(anil, F.mse_loss, batch.support_x, batch.support_y)  # (tasks,)
    features = net.body(batch.support_x).detach()  # (tasks, shots, 40)
    phi = torch.cat([features, torch.ones_like(features[..., :1])], -1)  # (tasks, shots, 41): weights and bias
    closed = torch.linalg.eigvalsh(2 / phi.shape[1] * phi.transpose(1, 2) @ phi)[:, -1]  # H = (2/K) Phi^T Phi
    torch.testing.assert_close(lam, closed, rtol=1e-10, atol=1e-12)


def test_alpha_lambda_above_two_is_what_makes_head_only_fine_tuning_grow():
    anil, net, batch = anil_and_tasks(tasks=8)
    lam = inner_curvature(anil, F.mse_loss, batch.support_x, batch.support_y)  # (tasks,)
    for alpha, grows in [(1.9 / lam.max().item(), False), (3.0 / lam.min().item(), True)]:
        curve = adaptation_curve(functional(net), F.mse_loss, params_of(net), batch.support_x, batch.support_y,
                                 batch.support_x, batch.support_y, steps=30, alpha=alpha,
                                 adapt=anil.adapt_names, check=False)  # (tasks, 31): support loss
        if grows:
            assert diverged(curve)[:, -1].all()
        else:
            assert (curve[:, 1:] <= curve[:, :-1] + 1e-12).all()  # monotone: alpha * lambda_i in (0, 2)


def test_whole_network_curvature_and_bad_input():
    torch.manual_seed(0)
    net = sinusoid_mlp(hidden=8).double()
    batch = Sinusoid.maml().sample(2, k_shot=5, q_query=5).to("cpu", torch.float64)
    lam = inner_curvature(MAML(net), F.mse_loss, batch.support_x, batch.support_y)
    for t in range(2):  # against a plain Hessian of one task
        theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        shapes = [p.shape for p in net.parameters()]

        def loss(flat):
            chunks = torch.split(flat, [s.numel() for s in shapes])
            fast = {n: c.view(s) for (n, _), c, s in zip(net.named_parameters(), chunks, shapes)}
            return F.mse_loss(torch.func.functional_call(net, fast, (batch.support_x[t],)), batch.support_y[t])
        h = torch.autograd.functional.hessian(loss, theta)
        torch.testing.assert_close(lam[t], torch.linalg.eigvalsh(h)[-1])
    with pytest.raises(ValueError, match="support_x and support_y must be shaped"):
        inner_curvature(MAML(net), F.mse_loss, batch.support_x[0], batch.support_y)
