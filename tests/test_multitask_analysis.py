"""Gradient-agreement diagnostics (mapping.multitask.analysis) against hand computations (float64, fast).

References are independent of the package: cosines of vectors written out by hand or taken with
``F.cosine_similarity`` row by row, PCGrad's projection of one vector on another's normal plane, and one
``torch.autograd.grad`` per task for the task gradients.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.multitask.aggregators import PCGrad
from mapping.multitask.analysis import (GramianRecorder, conflict_map, gradient_cosines, gramian_cosines,
                                        layer_groups, pairwise_cosines, pcgrad_coefficients)
from mapping.data import shuffled_batches
from mapping.multitask.architectures import HardSharing, task_losses
from mapping.multitask.backward import mtl_backward

D = torch.float64


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def per_task_gradients(losses, params):
    """One ``torch.autograd.grad`` per task: the (T, P) Jacobian, row by row."""
    return torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])
                        for loss in losses])


def tiny_model(tasks=("a", "b"), seed=0):
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh()).double()
    return HardSharing(trunk, {t: nn.Linear(6, 3).double() for t in tasks})


class Toy:
    """A multi-task dataset: ``x (N, 5)``, a class target per task."""

    def __init__(self, n=40, tasks=("a", "b"), seed=0):
        self.x = torch.randn(n, 5, generator=rng(seed), dtype=D)
        self.targets = {t: torch.randint(0, 3, (n,), generator=rng(seed + 1 + i)) for i, t in enumerate(tasks)}


def test_cosines_of_known_vectors():
    J = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]], dtype=D)  # 0°, 45°, 180°
    expected = torch.tensor([[1, 1 / math.sqrt(2), -1], [1 / math.sqrt(2), 1, -1 / math.sqrt(2)],
                             [-1, -1 / math.sqrt(2), 1]], dtype=D)
    torch.testing.assert_close(pairwise_cosines(J), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(gramian_cosines(J @ J.T), expected, rtol=0, atol=1e-15)


def test_gramian_route_equals_direct_cosines_symmetric_with_unit_diagonal():
    J = torch.randn(5, 300, generator=rng(1), dtype=D)
    direct = torch.stack([torch.stack([F.cosine_similarity(a, b, dim=0) for b in J]) for a in J])  # (T, T)
    C = pairwise_cosines(J)
    torch.testing.assert_close(C, direct, rtol=0, atol=1e-13)
    torch.testing.assert_close(C, C.T, rtol=0, atol=0)
    torch.testing.assert_close(C.diagonal(), torch.ones(5, dtype=D), rtol=0, atol=1e-15)
    assert C.abs().max() <= 1
    assert pairwise_cosines(J.float()).dtype == D  # float32 gradients, float64 cosines


def test_zero_gradient_has_undefined_cosines():
    C = pairwise_cosines(torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], dtype=D))
    assert torch.isnan(C[1]).all() and torch.isnan(C[:, 1]).all()
    assert C[0, 0] == 1 and C[2, 2] == 1 and torch.isfinite(C[0, 2])


def test_pcgrad_coefficients_project_two_gradients_by_hand():
    g1, g2 = torch.tensor([1.0, 0.0], dtype=D), torch.tensor([-1.0, 1.0], dtype=D)  # conflict: g1 . g2 = -1
    J = torch.stack([g1, g2])
    pc1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # onto the normal plane of g2
    pc2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    C = pcgrad_coefficients(J @ J.T)
    torch.testing.assert_close(C @ J, torch.stack([pc1, pc2]), rtol=0, atol=1e-15)
    assert abs(pc1 @ g2) < 1e-15 and abs(pc2 @ g1) < 1e-15
    torch.testing.assert_close(C.sum(0) @ J, PCGrad(seed=0)(J), rtol=0, atol=1e-15)
    # two conflicting gradients: the projections' cosine is minus the gradients' cosine
    torch.testing.assert_close(gramian_cosines(C @ J @ J.T @ C.T)[0, 1], -pairwise_cosines(J)[0, 1])
    # no conflict: nothing is projected
    J = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=D)
    torch.testing.assert_close(pcgrad_coefficients(J @ J.T), torch.eye(2, dtype=D), rtol=0, atol=0)


@pytest.mark.parametrize("T", [3, 4, 6])
def test_pcgrad_coefficients_reproduce_the_aggregator_with_its_orders(T):
    for seed in range(4):
        J = torch.randn(T, 4, generator=rng(10 * T + seed), dtype=D)  # P < T: many conflicts
        G = J @ J.T
        aggregator = PCGrad(seed=seed)
        weights = aggregator.weights(G)
        C = pcgrad_coefficients(G, aggregator.last_order)
        torch.testing.assert_close(C.sum(0), weights, rtol=0, atol=1e-12)
        # by hand, in the same orders: project each g_i in turn
        for i, order in enumerate(aggregator.last_order):
            g = J[i].clone()
            for j in order:
                if g @ J[j] < 0:
                    g = g - (g @ J[j]) / (J[j] @ J[j]) * J[j]
            torch.testing.assert_close(C[i] @ J, g, rtol=0, atol=1e-12)


def test_pcgrad_coefficients_reject_orders_that_are_not_permutations():
    G = torch.eye(3, dtype=D)
    for orders in ([[1, 2], [0, 2]], [[1, 1], [0, 2], [0, 1]], [[0, 1], [0, 2], [0, 1]]):
        with pytest.raises(ValueError, match="permutation of the other tasks"):
            pcgrad_coefficients(G, orders)


def test_recorder_keeps_the_gramian_and_changes_no_update():
    model, data = tiny_model(), Toy()
    losses = task_losses(model(data.x), data.targets, F.cross_entropy)
    shared = model.shared_parameters()
    J = per_task_gradients(losses, shared)
    reference = copy.deepcopy(model)
    recorder = GramianRecorder(PCGrad(seed=3))
    w = mtl_backward(losses, shared, recorder)
    torch.testing.assert_close(recorder.gramians[-1], J @ J.T, rtol=1e-12, atol=0)
    losses_ref = task_losses(reference(data.x), data.targets, F.cross_entropy)
    w_ref = mtl_backward(losses_ref, reference.shared_parameters(), PCGrad(seed=3))
    torch.testing.assert_close(w, w_ref, rtol=0, atol=0)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    with pytest.raises(ValueError, match="weights"):
        GramianRecorder(object())


def test_gradient_cosines_logs_the_gradients_of_each_step():
    data = Toy()
    batches = list(shuffled_batches(data, 16, epochs=2, seed=0))  # 3 + 3 steps
    model, reference = tiny_model(), tiny_model()
    log = gradient_cosines(model, batches, F.cross_entropy, PCGrad(seed=0), lr=1e-2)
    assert log["raw"].shape == (6, 2, 2) and log["update"].shape == (6, 2) and log["losses"].shape == (6, 2)
    x, targets = batches[0]  # step 0: the gradients at the initial parameters
    losses = task_losses(reference(x), targets, F.cross_entropy)
    J = per_task_gradients(losses, reference.shared_parameters())
    torch.testing.assert_close(log["raw"][0], pairwise_cosines(J), rtol=0, atol=1e-12)
    torch.testing.assert_close(log["losses"][0], losses.detach(), rtol=0, atol=0)
    d = PCGrad(seed=0)(J)  # the update on the shared parameters
    torch.testing.assert_close(log["update"][0], F.cosine_similarity(J, d[None], dim=1), rtol=0, atol=1e-12)
    # two tasks: PCGrad's projections have the absolute cosine of the gradients
    torch.testing.assert_close(log["projected"], log["raw"].abs(), rtol=0, atol=1e-12)
    # the model trained: its parameters moved away from the reference
    assert any((p - q).abs().max() > 0 for p, q in zip(model.parameters(), reference.parameters()))
    plain = gradient_cosines(tiny_model(), batches[:2], F.cross_entropy)  # Mean by default
    assert plain["projected"] is None
    torch.testing.assert_close(plain["weights"], torch.full((2, 2), 0.5, dtype=D), rtol=0, atol=0)
    with pytest.raises(ValueError, match="batches is empty"):
        gradient_cosines(tiny_model(), [], F.cross_entropy)


def test_conflict_map_averages_the_cosines_of_each_group_over_batches():
    tasks = ("a", "b", "c")
    data, model = Toy(tasks=tasks), tiny_model(tasks)
    batches = list(shuffled_batches(data, 20, seed=1))  # 2 batches
    before = [p.detach().clone() for p in model.parameters()]
    groups = layer_groups(model.trunk)
    assert list(groups) == ["0", "2"] and [len(g) for g in groups.values()] == [2, 2]
    maps = conflict_map(model, batches, F.cross_entropy, groups)
    assert list(maps) == ["all", "0", "2"]
    expected = {name: [] for name in maps}
    for x, targets in batches:
        losses = task_losses(model(x), targets, F.cross_entropy)
        for name, params in [("all", model.shared_parameters()), *groups.items()]:
            expected[name].append(pairwise_cosines(per_task_gradients(losses, list(params))))
    for name, matrices in expected.items():
        torch.testing.assert_close(maps[name], torch.stack(matrices).mean(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(maps[name], maps[name].T, rtol=0, atol=0)
        torch.testing.assert_close(maps[name].diagonal(), torch.ones(3, dtype=D), rtol=0, atol=1e-15)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))  # nothing trained
    shared = conflict_map(model, batches[:1], F.cross_entropy)  # default: model.shared_parameters()
    assert list(shared) == ["all", "shared"]
    torch.testing.assert_close(shared["shared"], expected["all"][0], rtol=0, atol=1e-12)


def test_shuffled_batches_visit_every_example_once_per_epoch():
    data = Toy(n=23)
    batches = list(shuffled_batches(data, 5, epochs=2, seed=4))
    assert [len(x) for x, _ in batches] == [5, 5, 5, 5, 3] * 2
    first = torch.cat([x for x, _ in batches[:5]])
    assert sorted(map(tuple, first.tolist())) == sorted(map(tuple, data.x.tolist()))
    x, targets = batches[0]
    row = (data.x == x[0]).all(1).nonzero()[0, 0]
    assert targets["a"][0] == data.targets["a"][row] and targets["b"][0] == data.targets["b"][row]
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        list(shuffled_batches(data, 0))


def test_layer_groups_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        layer_groups(nn.Linear(2, 2), depth=0)
    assert list(layer_groups(nn.Linear(2, 2))) == [""]
