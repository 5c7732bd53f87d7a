"""Multi-task architectures: limits that reduce to known networks, hand computations, parameter sets, bad input."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.multitask.architectures import CrossStitch, HardSharing, MMoE, SoftSharing, task_losses

D = torch.float64


def linear_column(seed, sizes=(3, 5, 4)):
    torch.manual_seed(seed)
    layers = [nn.Sequential(nn.Linear(a, b), nn.Tanh()) for a, b in itertools.pairwise(sizes)]
    return nn.Sequential(*layers).double()


def conv_column(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh())).double()


def heads_for(width, t, seed=10):
    torch.manual_seed(seed)
    return {f"task{i}": nn.Sequential(nn.Flatten(), nn.LazyLinear(2)).double() if width is None
            else nn.Linear(width, 2).double() for i in range(t)}


@pytest.mark.parametrize("kind", ["matrix", "per_channel"])
def test_cross_stitch_at_identity_equals_independent_networks(kind):
    if kind == "matrix":
        columns, x, heads = [linear_column(s) for s in range(3)], torch.randn(6, 3, dtype=D), heads_for(4, 3)
        model = CrossStitch(columns, heads)
    else:
        columns, x = [conv_column(s) for s in range(2)], torch.randn(4, 1, 5, 5, dtype=D)
        torch.manual_seed(10)
        heads = {f"task{i}": nn.Sequential(nn.Flatten(), nn.Linear(75, 2)).double() for i in range(2)}
        model = CrossStitch(columns, heads, channels=(2, 3))
        assert [tuple(a.shape) for a in model.alphas] == [(2, 2, 2), (2, 2, 3)]
    outputs = model(x)
    assert list(outputs) == model.task_names == list(heads)
    loss = sum((o ** 2).sum() * (i + 1) for i, o in enumerate(outputs.values()))
    grads = torch.autograd.grad(loss, [p for c in columns for p in c.parameters()])
    alone = {t: heads[t](columns[i](x)) for i, t in enumerate(heads)}
    for t in heads:
        torch.testing.assert_close(outputs[t], alone[t], rtol=0, atol=0)
    loss_alone = sum((o ** 2).sum() * (i + 1) for i, o in enumerate(alone.values()))
    want = torch.autograd.grad(loss_alone, [p for c in columns for p in c.parameters()])
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=1e-14, atol=0)


def test_cross_stitch_mixes_with_the_papers_initialisation(float64):
    columns = [nn.Sequential(nn.Linear(3, 4).double()) for _ in range(2)]
    heads = [nn.Identity(), nn.Identity()]
    model = CrossStitch(columns, heads, init=(0.9, 0.1))
    x = torch.randn(5, 3, dtype=D)
    a, b = columns[0](x), columns[1](x)
    out = model(x)
    assert model.task_names == ["0", "1"]
    torch.testing.assert_close(out["0"], 0.9 * a + 0.1 * b, rtol=1e-14, atol=0)
    torch.testing.assert_close(out["1"], 0.1 * a + 0.9 * b, rtol=1e-14, atol=0)


def test_mmoe_with_one_expert_equals_hard_sharing():
    torch.manual_seed(0)
    expert = nn.Sequential(nn.Linear(4, 6), nn.ReLU()).double()
    heads = {"a": nn.Linear(6, 1).double(), "b": nn.Linear(6, 3).double()}
    x = torch.randn(7, 4, dtype=D)
    mmoe, hard = MMoE([expert], 4, heads).double(), HardSharing(expert, heads)
    got, want = mmoe(x), hard(x)
    assert list(got) == ["a", "b"]
    for t in want:
        torch.testing.assert_close(got[t], want[t], rtol=1e-12, atol=1e-12)


def test_mmoe_follows_eqs_5_and_6():
    torch.manual_seed(1)
    experts = [nn.Linear(6, 3).double() for _ in range(4)]
    heads = [nn.Linear(3, 1).double(), nn.Linear(3, 2).double()]
    model = MMoE(experts, 6, heads, tasks=["ctr", "like"]).double()
    x = torch.randn(2, 1, 6, dtype=D)  # the gates see x.flatten(1)
    out = model(x)
    for task, head in zip(["ctr", "like"], heads):
        W = model.gates[task].weight  # (4 experts, 6) W_gk, no bias
        for n in range(2):
            g = F.softmax(W @ x[n, 0], 0)  # (4,)
            f = sum(g[i] * experts[i](x[n]) for i in range(4))  # (1, 3)
            torch.testing.assert_close(out[task][n], head(f), rtol=1e-13, atol=1e-15)


def soft_nets(seed=0, t=3):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double() for _ in range(t)]


def test_soft_sharing_penalty_matches_a_hand_computation_and_pulls_parameters_together():
    nets = soft_nets()
    model = SoftSharing(nets, tasks=["x", "y", "z"])
    flat = [torch.cat([p.detach().flatten() for p in n.parameters()]) for n in nets]  # 3 x (P,)
    hand = sum(((flat[i] - flat[j]) ** 2).sum() for i in range(3) for j in range(i + 1, 3))
    penalty = model.penalty()
    torch.testing.assert_close(penalty, hand, rtol=1e-14, atol=0)
    torch.testing.assert_close(model.penalty(["0.weight"]),
                               sum(((nets[i][0].weight - nets[j][0].weight) ** 2).sum()
                                   for i in range(3) for j in range(i + 1, 3)), rtol=1e-14, atol=0)
    grads = torch.autograd.grad(penalty, [p for n in nets for p in n.parameters()])
    P = len(list(nets[0].parameters()))
    for i in range(3):  # d/d theta_i = 2 sum_{j != i} (theta_i - theta_j): towards the others
        g = torch.cat([x.flatten() for x in grads[i * P:(i + 1) * P]])
        torch.testing.assert_close(g, 2 * sum(flat[i] - flat[j] for j in range(3) if j != i), rtol=1e-13, atol=0)
    with torch.no_grad():
        for p, g in zip([p for n in nets for p in n.parameters()], grads):
            p -= 0.05 * g
    assert model.penalty() < 0.9 * penalty
    assert list(model(torch.randn(4, 2, dtype=D))) == ["x", "y", "z"]


def test_hard_sharing_parameter_sets_are_disjoint_and_cover_the_model():
    torch.manual_seed(0)
    model = HardSharing(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4)),
                        {"depth": nn.Linear(4, 1), "seg": nn.Linear(4, 5)})
    shared = {id(p) for p in model.shared_parameters()}
    per_task = {t: {id(p) for p in model.task_parameters(t)} for t in model.task_names}
    assert shared.isdisjoint(per_task["depth"] | per_task["seg"]) and per_task["depth"].isdisjoint(per_task["seg"])
    assert {id(p) for p in model.task_parameters()} == per_task["depth"] | per_task["seg"]
    assert shared | per_task["depth"] | per_task["seg"] == {id(p) for p in model.parameters()}
    out = model(torch.randn(2, 3))
    assert {t: tuple(o.shape) for t, o in out.items()} == {"depth": (2, 1), "seg": (2, 5)}
    with pytest.raises(ValueError, match="task must be one of"):
        model.task_parameters("normals")


def test_task_losses_stacks_one_loss_per_task_and_names_a_missing_task():
    out = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0, 0.0])}
    targets = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.0, 3.0]), "extra": torch.zeros(1)}
    torch.testing.assert_close(task_losses(out, targets, F.mse_loss), torch.tensor([2.5, 5.0]))
    torch.testing.assert_close(task_losses(out, targets, {"a": F.l1_loss, "b": F.mse_loss}), torch.tensor([1.5, 5.0]))
    with pytest.raises(ValueError, match="targets has no entry for task 'b'"):
        task_losses(out, {"a": targets["a"]}, F.mse_loss)
    with pytest.raises(ValueError, match="loss_fns has no entry for task 'b'"):
        task_losses(out, targets, {"a": F.mse_loss})
    with pytest.raises(ValueError, match="must return a scalar"):
        task_losses(out, targets, lambda o, y: F.mse_loss(o, y, reduction="none"))


def test_heads_that_do_not_match_the_tasks_are_named():
    trunk = nn.Linear(3, 4)
    with pytest.raises(ValueError, match=r"heads has 2 entries \['0', '1'\] but tasks has 3 names"):
        HardSharing(trunk, [nn.Linear(4, 1), nn.Linear(4, 1)], tasks=["a", "b", "c"])
    with pytest.raises(ValueError, match="heads has 2 entries"):
        HardSharing(trunk, {"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)}, tasks=["a", "c"])
    with pytest.raises(ValueError, match=r"heads must be keyed by task names \(str\), got the key 0"):
        HardSharing(trunk, {0: nn.Linear(4, 1)})
    with pytest.raises(ValueError, match="heads must hold at least one module"):
        HardSharing(trunk, {})
    with pytest.raises(ValueError, match="heads must be a mapping task -> nn.Module or a sequence"):
        HardSharing(trunk, nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"heads has 2 entries .* but there are 3 columns"):
        CrossStitch([linear_column(s) for s in range(3)], [nn.Linear(4, 1), nn.Linear(4, 1)])
    with pytest.raises(ValueError, match="columns must all have the same positive number of layers"):
        CrossStitch([linear_column(0), linear_column(1, sizes=(3, 4))], [nn.Linear(4, 1), nn.Linear(4, 1)])
    with pytest.raises(ValueError, match=r"heads has tasks \['a', 'b'\] but gates has \['a'\]"):
        MMoE([nn.Linear(3, 4)], {"a": nn.Linear(3, 1)}, {"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})
    with pytest.raises(ValueError, match=r"gates has 1 entries"):
        MMoE([nn.Linear(3, 4)], [nn.Linear(3, 1)], [nn.Linear(4, 1), nn.Linear(4, 1)])
    model = MMoE([nn.Linear(3, 4), nn.Linear(3, 4)], [nn.Linear(3, 3)], [nn.Linear(4, 1)])
    with pytest.raises(ValueError, match=r"gates\['0'\] must give 2 logits per example"):
        model(torch.randn(2, 3))


def test_soft_sharing_rejects_networks_of_different_structure():
    nets = soft_nets(t=2)
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(4, 2\) in networks\['1'\] but \(3, 2\)"):
        SoftSharing([nets[0], nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))])
    with pytest.raises(ValueError, match=r"'2.bias' is missing from networks\['b'\]"):
        SoftSharing({"a": nets[0], "b": nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1, bias=False))})
    with pytest.raises(ValueError, match="names must be parameter names"):
        SoftSharing(nets).penalty(["0.kernel"])
