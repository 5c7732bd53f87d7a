"""The learner protocol (mapping.meta.protocol): every learner answers ``meta_loss(batch, loss_fn=None)`` with a
tensor whose backward leaves the meta-gradient in ``.grad``, and ``predict(support_x, support_y, query_x)``;
checked on every learner, and against independent per-task loops in float64."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mapping.data import TaskBatch
from mapping.meta import (ANIL, FOMAML, MAML, Learns, MatchingNetwork, MetaSGD, PrototypicalNetwork, Reptile,
                          SiameseNetwork)
from tests.reference import reference_meta_loss

N_WAY, K_SHOT, Q, TASKS, DIM = 3, 2, 4, 5, 6
# class means in the first half of the features; the second half is loud noise that a learner must learn to ignore
SPREAD, NOISE = 1.5, torch.tensor([1.0] * (DIM // 2) + [4.0] * (DIM - DIM // 2))


class Classifier(nn.Module):
    """A small classifier with a named head (for ANIL) and an embedding (for the metric methods)."""

    out_dim = 8

    def __init__(self, n_way: int = N_WAY) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(DIM, 8), nn.Tanh())
        self.head = nn.Linear(8, n_way)

    def head_names(self) -> list[str]:
        return ["head.weight", "head.bias"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def episodes(tasks: int = TASKS, seed: int = 0, dtype=torch.float32) -> TaskBatch:
    """Gaussian classes: each task's class means drawn afresh, labels 0..n_way-1 in every support set."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(tasks, N_WAY, DIM, generator=g, dtype=dtype) * SPREAD  # (tasks, n_way, dim)
    means[..., DIM // 2:] = 0
    noise = NOISE.to(dtype)
    ys = torch.arange(N_WAY).repeat_interleave(K_SHOT).expand(tasks, -1)  # (tasks, n_way * k)
    yq = torch.arange(N_WAY).repeat(Q // N_WAY + 1)[:Q].expand(tasks, -1)  # (tasks, q)
    pick = lambda y: torch.gather(means, 1, y[..., None].expand(-1, -1, DIM))  # noqa: E731  (tasks, n, dim)
    xs = pick(ys) + noise * torch.randn(tasks, ys.shape[1], DIM, generator=g, dtype=dtype)
    xq = pick(yq) + noise * torch.randn(tasks, Q, DIM, generator=g, dtype=dtype)
    return TaskBatch(xs, ys.clone(), xq, yq.clone())


def embedding() -> nn.Module:
    net = nn.Sequential(nn.Linear(DIM, 8), nn.Tanh())
    net.out_dim = 8
    return net


LEARNERS = {
    "maml": lambda: MAML(Classifier(), alpha=0.3, steps=2, loss_fn=F.cross_entropy),
    "fomaml": lambda: FOMAML(Classifier(), alpha=0.3, steps=2, loss_fn=F.cross_entropy),
    "metasgd": lambda: MetaSGD(Classifier(), alpha=0.3, steps=2, loss_fn=F.cross_entropy),
    "anil": lambda: ANIL(Classifier(), alpha=0.3, steps=2, loss_fn=F.cross_entropy),
    "reptile": lambda: Reptile(Classifier(), alpha=1.0, steps=5, loss_fn=F.cross_entropy),
    "reptile-adam": lambda: Reptile(Classifier(), alpha=0.01, steps=3, inner="adam", loss_fn=F.cross_entropy),
    "protonet": lambda: PrototypicalNetwork(embedding()),
    "matching": lambda: MatchingNetwork(embedding(), scale=10.0),
    "matching-fce": lambda: MatchingNetwork(embedding(), fce=True),
    "siamese": lambda: SiameseNetwork(embedding()),
}


@pytest.mark.parametrize("name", LEARNERS)
def test_every_learner_answers_the_protocol(name):
    torch.manual_seed(0)
    learner = LEARNERS[name]()
    assert isinstance(learner, Learns)
    batch = episodes()
    loss = learner.meta_loss(batch)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    trainable = [(k, p) for k, p in learner.named_parameters() if p.requires_grad]
    moved = [k for k, p in trainable if p.grad is not None and p.grad.abs().sum() > 0]
    assert moved, f"{name}: backward left no meta-gradient"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable if p.grad is not None)
    assert set(learner.diagnostics) & {"inner_losses", "accuracy"}
    out = learner.predict(batch.support_x, batch.support_y, batch.query_x)
    assert out.shape == (TASKS, Q, N_WAY) and not out.requires_grad and torch.isfinite(out).all()


@pytest.mark.parametrize("name", LEARNERS)
def test_a_meta_training_loop_written_once_trains_every_learner(name):
    """One loop, no branch on the method: the held-out query error falls by at least 15% (Reptile, the slowest
    here, from 0.54 to 0.45; MAML from 0.66 to 0.31)."""
    torch.manual_seed(0)
    learner = LEARNERS[name]()
    held_out = episodes(tasks=200, seed=99)

    def accuracy() -> float:
        out = learner.predict(held_out.support_x, held_out.support_y, held_out.query_x)  # (tasks, q, n_way)
        return (out.argmax(-1) == held_out.query_y).float().mean().item()
    before = accuracy()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)  # Reptile's "gradient" too: Nichol et al. §6 use Adam
    for step in range(150):
        opt.zero_grad()
        learner.meta_loss(episodes(tasks=8, seed=1000 + step)).backward()
        opt.step()
    after = accuracy()
    assert 1 - after < 0.85 * (1 - before), f"{name}: accuracy {before:.3f} -> {after:.3f}"


def sgd_task(model: nn.Module, x, y, steps: int, alpha: float) -> dict[str, torch.Tensor]:
    """Plain SGD on one task with autograd, no torch.func: the adapted parameters."""
    fast = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(functional_call(model, fast, (x,)), y), list(fast.values()))
        fast = {k: (v - alpha * g).detach().requires_grad_() for (k, v), g in zip(fast.items(), grads)}
    return {k: v.detach() for k, v in fast.items()}


@pytest.mark.parametrize("use_query", [True, False])
def test_reptile_backward_leaves_theta_minus_the_mean_adapted_weights(float64, use_query):
    """Nichol et al. 2018, Algorithm 2: ``.grad = theta - mean_i theta'_i``, against a per-task loop in float64."""
    torch.manual_seed(0)
    model = Classifier().double()
    batch = episodes(dtype=torch.float64)
    reptile = Reptile(model, alpha=0.3, steps=3, use_query=use_query, loss_fn=F.cross_entropy, execution="loop")
    value = reptile.meta_loss(batch)
    value.backward()
    adapted = []
    first = []
    for t in range(TASKS):
        x, y = batch.support_x[t], batch.support_y[t]
        if use_query:
            x, y = torch.cat([x, batch.query_x[t]]), torch.cat([y, batch.query_y[t]])
        first.append(F.cross_entropy(model(x), y).detach())
        adapted.append(sgd_task(model, x, y, 3, 0.3))
    torch.testing.assert_close(value.detach(), torch.stack(first).mean())
    for k, p in model.named_parameters():
        mean = torch.stack([a[k] for a in adapted]).mean(0)
        torch.testing.assert_close(p.grad, p.detach() - mean, rtol=1e-10, atol=1e-12)


def test_reptile_meta_loss_accumulates_like_any_loss_and_refuses_a_second_derivative(float64):
    torch.manual_seed(0)
    reptile = Reptile(Classifier().double(), alpha=0.3, steps=2, loss_fn=F.cross_entropy)
    batch = episodes(dtype=torch.float64)
    reptile.meta_loss(batch).backward()
    once = [p.grad.clone() for p in reptile.parameters()]
    (0.5 * reptile.meta_loss(batch)).backward()  # scaled by the incoming gradient, added to .grad
    for p, g in zip(reptile.parameters(), once):
        torch.testing.assert_close(p.grad, 1.5 * g)
    with pytest.raises(RuntimeError, match="differentiated twice"):
        torch.autograd.grad(reptile.meta_loss(batch), list(reptile.parameters()), create_graph=True)


@pytest.mark.parametrize("name", ["maml", "metasgd", "anil"])
def test_predict_is_a_per_task_sgd_loop_in_float64(float64, name):
    torch.manual_seed(0)
    learner = LEARNERS[name]().double()
    batch = episodes(dtype=torch.float64)
    got = learner.predict(batch.support_x, batch.support_y, batch.query_x)  # (tasks, q, n_way)
    model = learner.module
    names = learner.adapt_names or [k for k, _ in model.named_parameters()]
    rates = learner.alpha if isinstance(learner.alpha, dict) else {k: learner.alpha for k in names}
    for t in range(TASKS):
        fast = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
        for _ in range(learner.steps):
            loss = F.cross_entropy(functional_call(model, fast, (batch.support_x[t],)), batch.support_y[t])
            grads = torch.autograd.grad(loss, [fast[k] for k in names])
            fast = {**fast, **{k: (fast[k] - rates[k].detach() * g if isinstance(rates[k], torch.Tensor)
                                   else fast[k] - rates[k] * g) for k, g in zip(names, grads)}}
        want = functional_call(model, fast, (batch.query_x[t],)).detach()
        torch.testing.assert_close(got[t], want, rtol=1e-10, atol=1e-12)


def test_meta_loss_with_the_constructors_loss_equals_the_reference(float64):
    torch.manual_seed(0)
    maml = MAML(Classifier().double(), alpha=0.3, steps=2, loss_fn=F.cross_entropy)
    batch = episodes(dtype=torch.float64)
    want = reference_meta_loss(maml.module, batch, F.cross_entropy, steps=2, alpha=0.3)
    torch.testing.assert_close(maml.meta_loss(batch), want)
    torch.testing.assert_close(maml.meta_loss(batch, F.cross_entropy), want)  # the call's loss wins
    assert maml.diagnostics["inner_losses"].shape == (TASKS, 2)


def test_constructors_share_keywords_and_take_learn2learns_lr():
    for cls in (MAML, FOMAML, MetaSGD, ANIL, Reptile):
        assert cls(Classifier(), lr=0.5).alpha == 0.5 or isinstance(cls(Classifier(), lr=0.5).alpha, dict)
        assert cls(Classifier(), 0.25, 3).steps == 3
        with pytest.raises(ValueError, match="alpha and lr"):
            cls(Classifier(), alpha=0.1, lr=0.2)
        with pytest.raises(TypeError):
            cls(Classifier(), 0.1, 1, True)  # past alpha and steps, every option is a keyword
    assert MetaSGD(Classifier(), lr=0.5).inner_alpha == 0.5
    with pytest.raises(ValueError, match="FOMAML is first-order"):
        FOMAML(Classifier(), first_order=False)
    with pytest.raises(ValueError, match="head="):
        ANIL(Classifier(), adapt=["head.weight"])


def test_a_missing_loss_fn_is_named():
    with pytest.raises(ValueError, match="loss_fn must be given"):
        MAML(Classifier()).meta_loss(episodes())
    with pytest.raises(ValueError, match="loss_fn must be given"):
        Reptile(Classifier()).predict(*episodes().tensors()[:3])
    with pytest.raises(ValueError, match="loss_fn must be a callable"):
        MAML(Classifier(), loss_fn="cross_entropy")
    with pytest.raises(ValueError, match="loss_fn must be a callable"):
        PrototypicalNetwork(embedding()).meta_loss(episodes(), loss_fn=3)


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil", "reptile-adam"])
def test_with_module_keeps_every_setting(name):
    learner = LEARNERS[name]()
    other = learner.with_module(Classifier(n_way=5))
    assert type(other) is type(learner) and other.options == learner.options
    assert (other.steps, other.inner_alpha, other.adapt_names, other.execution) == (
        learner.steps, learner.inner_alpha, learner.adapt_names, learner.execution)


def test_metric_predict_matches_the_forward_of_each_task_alone():
    torch.manual_seed(0)
    for name in ("protonet", "matching", "siamese"):
        learner = LEARNERS[name]()
        batch = episodes()
        got = learner.predict(batch.support_x, batch.support_y, batch.query_x)
        for t in range(TASKS):
            with torch.no_grad():
                one = learner(batch.support_x[t:t + 1], batch.support_y[t:t + 1], batch.query_x[t:t + 1], N_WAY)
            torch.testing.assert_close(got[t], one[0])


def test_metric_meta_loss_takes_a_loss_on_the_class_scores():
    torch.manual_seed(0)
    net = PrototypicalNetwork(embedding())
    batch = episodes()
    default = net.meta_loss(batch)
    scores = net.predict(batch.support_x, batch.support_y, batch.query_x).flatten(0, 1)
    torch.testing.assert_close(default.detach(), F.cross_entropy(scores, batch.query_y.flatten()))
    margin = net.meta_loss(batch, F.multi_margin_loss)
    torch.testing.assert_close(margin.detach(), F.multi_margin_loss(scores, batch.query_y.flatten()))
    assert 0 <= float(net.diagnostics["accuracy"]) <= 1


def test_a_new_method_is_a_class_with_the_two_calls():
    """A baseline written against the protocol alone (fine-tune nothing: nearest support example) passes the
    same checks, and the loop of the test above runs it unchanged."""

    class NearestNeighbour(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def predict(self, support_x, support_y, query_x, loss_fn=None, steps=None):
            d = -self.scale * torch.cdist(query_x, support_x)  # (tasks, q, m)
            return torch.stack([d.masked_fill(support_y[:, None, :] != c, -1e9).amax(-1)
                                for c in range(int(support_y.max()) + 1)], -1)  # (tasks, q, n_way)

        def meta_loss(self, batch, loss_fn=None):
            out = self.predict(batch.support_x, batch.support_y, batch.query_x)
            return (loss_fn or F.cross_entropy)(out.flatten(0, 1), batch.query_y.flatten())

    learner = NearestNeighbour()
    assert isinstance(learner, Learns) and not isinstance(copy.copy(nn.Linear(2, 2)), Learns)
    learner.meta_loss(episodes()).backward()
    assert learner.scale.grad is not None
