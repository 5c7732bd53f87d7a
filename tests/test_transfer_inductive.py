"""Inductive transfer (mapping.transfer.inductive) and its Omniglot experiment (mapping.experiments.transfer_omniglot).

Unit tests use the small fake zips of ``omniglot_fixtures`` (random strokes: no character can be learnt from them)
and, for learning, a synthetic :class:`OmniglotSplit` whose drawings are jittered copies of one template per
character. The real-data test runs only when ``$MAPPING_DATA/omniglot`` holds the official zips.
"""
from __future__ import annotations

import math

import pytest
import torch

from mapping.data.omniglot import OmniglotSplit, load_omniglot
from mapping.experiments.transfer_omniglot import TransferConfig, run_inductive, target_characters
from mapping.experiments import omniglot_backbone as ob
from mapping.nn.conv4 import Conv4
from mapping.transfer import inductive as ind
from omniglot_fixtures import requires_real


@pytest.fixture
def fake_eval(fake_root, fake_cache) -> OmniglotSplit:
    return load_omniglot("evaluation", fake_root, strict=False)


def templated_split(classes: int, seed: int = 0, size: int = 28) -> OmniglotSplit:
    """``classes`` characters; each drawing is its character's random template shifted by up to 1 pixel, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    templates = (torch.rand(classes, 1, size // 4, size // 4, generator=gen) < 0.3).float()  # (C, 1, 7, 7)
    templates = torch.nn.functional.interpolate(templates, size=size)[:, 0]  # (C, 28, 28) blocky shapes
    shifts = torch.randint(-1, 2, (classes, 20, 2), generator=gen)  # (C, 20, 2)
    images = torch.stack([torch.stack([templates[c].roll(tuple(shifts[c, d].tolist()), dims=(0, 1))
                                       for d in range(20)]) for c in range(classes)])  # (C, 20, 28, 28)
    images = (images + 0.1 * torch.rand(images.shape, generator=gen)).clamp(0, 1)  # (C, 20, 28, 28)
    return OmniglotSplit(images, torch.arange(1, classes + 1), torch.zeros(classes, dtype=torch.int64),
                         torch.zeros(classes, dtype=torch.int64), ("Synthetic",),
                         tuple(("Synthetic", f"character{c + 1:02d}") for c in range(classes)))


# ------------------------------------------------------------------------------------------ few_shot_split

def test_few_shot_split_keeps_labels_and_drawings(fake_eval):
    for k in (1, 5, 19):
        s = ob.few_shot_split(fake_eval, k, seed=3)
        c = fake_eval.num_classes
        assert s.train_x.shape == (c * k, 1, 28, 28) and s.test_x.shape == (c * (20 - k), 1, 28, 28)
        assert s.num_classes == c and s.train_y.dtype == s.test_y.dtype == torch.int64
        assert torch.equal(s.train_y, torch.arange(c).repeat_interleave(k))
        assert torch.equal(s.test_y, torch.arange(c).repeat_interleave(20 - k))
        assert torch.equal(s.train_x[:, 0], fake_eval.images[s.train_y, s.train_drawers.flatten()])
        assert torch.equal(s.test_x[:, 0], fake_eval.images[s.test_y, s.test_drawers.flatten()])
        for train_d, test_d in zip(s.train_drawers.tolist(), s.test_drawers.tolist()):
            assert set(train_d).isdisjoint(test_d) and sorted(train_d + test_d) == list(range(20))


def test_few_shot_split_is_seeded(fake_eval):
    a, b, other = (ob.few_shot_split(fake_eval, 2, seed) for seed in (0, 0, 1))
    assert torch.equal(a.train_drawers, b.train_drawers) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_drawers, other.train_drawers)
    assert len({tuple(row) for row in a.train_drawers.tolist()}) > 1  # drawers drawn per character


@pytest.mark.parametrize("k, match", [(20, "k=20 leaves no drawing to test on: each character has 20 drawers"),
                                      (25, "k=25 leaves no drawing"), (0, "k must be an int >= 1"),
                                      (-1, "k must"), (1.5, "k must"), (True, "k must")])
def test_few_shot_split_bad_k(fake_eval, k, match):
    with pytest.raises(ValueError, match=match):
        ob.few_shot_split(fake_eval, k, 0)


def test_few_shot_split_bad_input(fake_eval):
    with pytest.raises(ValueError, match="split must hold at least one character"):
        ob.few_shot_split(fake_eval.subset(slice(0, 0)), 1, 0)
    with pytest.raises(ValueError, match="split must be an OmniglotSplit"):
        ob.few_shot_split(fake_eval.images, 1, 0)
    with pytest.raises(ValueError, match="seed"):
        ob.few_shot_split(fake_eval, 1, -1)


# ----------------------------------------------------------------------------- probe, fine-tune, scratch

def trained_backbone(hidden: int = 8) -> Conv4:
    """A backbone whose batch-norm buffers are not at their initial values (one train-mode forward)."""
    net = ob.backbone(None, hidden, seed=0)
    net.train()
    with torch.no_grad():
        net(torch.rand(16, 1, 28, 28))
    return net


def test_probe_leaves_backbone_bit_identical(fake_eval):
    net = trained_backbone()
    before = {n: t.clone() for n, t in net.state_dict().items()}
    assert any("running_mean" in n for n in before)  # buffers are part of the check
    s = ob.few_shot_split(fake_eval, 2, 0)
    head = ind.linear_probe(net, s.train_x, s.train_y, s.num_classes, epochs=3, batch=8, lr=1e-2)
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert head.weight.shape == (s.num_classes, net.embedding_dim) and head.weight.requires_grad
    assert 0 <= ind.accuracy(torch.nn.Sequential(net, head), s.test_x, s.test_y) <= 1
    assert all(torch.equal(before[n], t) for n, t in net.state_dict().items())  # evaluation keeps them too


def test_freeze():
    net = trained_backbone()
    assert ind.freeze(net) is net and not net.training and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="module must be an nn.Module"):
        ind.freeze("net")


def test_fine_tune_uses_a_lower_backbone_rate(fake_eval, monkeypatch):
    net = trained_backbone()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    made = []
    real = ind.fine_tune_optimizer
    monkeypatch.setattr(ind, "fine_tune_optimizer", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    s = ob.few_shot_split(fake_eval, 2, 0)
    model = ind.fine_tune(net, s.train_x, s.train_y, s.num_classes, epochs=2, batch=8, lr=1e-2,
                          backbone_lr_scale=0.1)
    (opt,) = made
    head_group, body_group = opt.param_groups
    assert head_group["lr"] == 1e-2 and body_group["lr"] == pytest.approx(1e-3)
    assert [id(p) for p in head_group["params"]] == [id(p) for p in model[1].parameters()]
    assert [id(p) for p in body_group["params"]] == [id(p) for p in net.parameters()]
    assert model[0] is net and not model.training
    assert all(not torch.equal(before[n], p) for n, p in net.named_parameters())  # every backbone tensor moved


def test_fine_tune_optimizer_and_scratch_rates():
    net, head = trained_backbone(), torch.nn.Linear(8, 3)
    opt = ind.fine_tune_optimizer(net, head, lr=0.5, backbone_lr_scale=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.5, pytest.approx(0.05)]
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        ind.fine_tune_optimizer(net, head, lr=0.5, backbone_lr_scale=0)
    with pytest.raises(ValueError, match="lr"):
        ind.fine_tune_optimizer(net, head, lr=-1.0, backbone_lr_scale=0.1)


def test_transfer_bad_arguments(fake_eval):
    s = ob.few_shot_split(fake_eval, 1, 0)
    args = (s.train_x, s.train_y, s.test_x, s.test_y)
    state = ob.backbone(None, 8).state_dict()
    with pytest.raises(ValueError, match="method must be one of"):
        ob.transfer("lora", state, *args, epochs=1, hidden=8)
    with pytest.raises(ValueError, match="backbone_state must be a state dict"):
        ob.transfer("probe", None, *args, epochs=1, hidden=8)
    with pytest.raises(ValueError, match="backbone_state must be None"):
        ob.transfer("scratch", state, *args, epochs=1, hidden=8)
    with pytest.raises(ValueError, match="train_x must be"):
        ob.transfer("probe", state, s.train_x[:, 0], s.train_y, s.test_x, s.test_y, epochs=1, hidden=8)
    with pytest.raises(ValueError, match="test_x must be"):
        ob.transfer("probe", state, s.train_x, s.train_y, s.test_x, s.test_y.float(), epochs=1, hidden=8)
    with pytest.raises(ValueError, match="epochs"):
        ob.transfer("finetune", state, *args, epochs=0, hidden=8)


def test_pretrain_returns_a_backbone_state(fake_root, fake_cache):
    source = load_omniglot("background", fake_root, strict=False)
    state, val = ob.pretrain(source, 1, drawers=4, batch=16, hidden=8)
    assert not any(n.startswith("head.") for n in state) and any("running_var" in n for n in state)
    assert ob.backbone(state, 8).state_dict().keys() == state.keys() and 0 <= val <= 100
    assert math.isnan(ob.pretrain(source.subset(slice(0, 2)), 1, drawers=20, hidden=8)[1])
    for drawers in (0, 21, 2.5):
        with pytest.raises(ValueError, match=r"drawers must be an int in \[1, 20\]"):
            ob.pretrain(source, 1, drawers=drawers, hidden=8)


def test_transfer_learns_beyond_chance():
    source, target = templated_split(30, seed=0), templated_split(10, seed=1)
    state, val = ob.pretrain(source, 3, drawers=10, batch=32, lr=3e-3, hidden=16)
    assert val > 50  # 30-way, chance 3.3%
    s = ob.few_shot_split(target, 2, 0)
    for method, lr in (("probe", 3e-2), ("finetune", 1e-2), ("scratch", 3e-3)):
        acc = ob.transfer(method, None if method == "scratch" else state, s.train_x, s.train_y, s.test_x, s.test_y,
                           epochs=30, batch=10, lr=lr, hidden=16)
        assert acc > 40, (method, acc)  # 10-way: chance 10%


# ---------------------------------------------------------------------------------------- the experiment

def test_run_inductive_smoke_on_fake_zips(fake_root, fake_cache):
    config = TransferConfig.for_mode("smoke")
    metrics = run_inductive(config, root=fake_root, strict=False)
    for method in ind.METHODS:
        for k in config.shots:
            key = f"inductive/{method}/k{k}"
            assert 0 <= metrics[f"{key}/acc"] <= 100 and math.isfinite(metrics[f"{key}/ci95"])
            assert [metrics[f"{key}/seed{s}"] for s in config.seeds] and f"{key}/seed{config.seeds[0]}" in metrics
    assert f"inductive/gain/k{config.shots[0]}/acc" in metrics and 0 <= metrics["inductive/pretrain/val_acc"] <= 100
    assert metrics["inductive/seconds"] > 0


def test_config_modes_and_bad_config():
    full = TransferConfig.for_mode("full")
    assert full.shots == (1, 2, 5, 10, 15) and full.seeds == (0, 1, 2) and full.methods == ind.METHODS
    assert TransferConfig.for_mode("smoke").seeds == (0, 1)
    with pytest.raises(ValueError, match="methods"):
        TransferConfig(methods=("probe", "lora"))
    with pytest.raises(ValueError, match="shots"):
        TransferConfig(shots=(1, 20))


def test_target_characters(fake_eval):
    sub = target_characters(fake_eval, 2)
    assert sub.num_classes == 2 * len(fake_eval.alphabets)
    assert torch.bincount(sub.alphabet_index).tolist() == [2] * len(fake_eval.alphabets)
    assert target_characters(fake_eval, None) is fake_eval




@requires_real
def test_real_few_shot_split_and_probe():
    evaluation = load_omniglot("evaluation")
    s = ob.few_shot_split(evaluation, 5, seed=0)
    assert s.train_x.shape == (659 * 5, 1, 28, 28) and s.test_x.shape == (659 * 15, 1, 28, 28)
    with pytest.raises(ValueError, match="k=20 leaves no drawing to test on: each character has 20 drawers"):
        ob.few_shot_split(evaluation, 20, 0)
    source = target_characters(load_omniglot("background"), 5)  # 150 background characters
    state, val = ob.pretrain(source, 2, drawers=15, batch=32, lr=3e-3, hidden=16)
    target = target_characters(evaluation, 2)  # 40 evaluation characters
    few = ob.few_shot_split(target, 5, 0)
    acc = ob.transfer("finetune", state, few.train_x, few.train_y, few.test_x, few.test_y, epochs=20, batch=50,
                       lr=1e-2, hidden=16)
    print(f"\nreal Omniglot: pre-training val {val:.1f}% (150-way), fine-tune 40-way 5-shot {acc:.1f}%")
    assert val > 5 and acc > 10  # chance: 0.7% and 2.5%


# ------------------------------------------------------------------- the user's own network (not a Conv4)

def clusters(n: int, seed: int, classes: int = 3, dim: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points around ``classes`` well-separated centres (the same centres for every seed) and their labels."""
    centres = 3 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))  # (classes, dim)
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(classes, (n,), generator=gen)  # (n,)
    return centres[y] + 0.3 * torch.randn(n, dim, generator=gen), y  # (n, dim), (n,)


def user_mlp(seed: int = 0) -> torch.nn.Module:
    """A feature extractor as a user writes one: no ``embedding_dim``, features (N, 16)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU())


def test_linear_probe_on_a_user_mlp_separates_separable_features():
    torch.set_num_threads(1)
    (x, y), (tx, ty) = clusters(90, seed=1), clusters(300, seed=2)
    net = user_mlp()
    before = [p.clone() for p in net.parameters()]
    head = ind.linear_probe(net, x, y, 3, epochs=60, batch=32, lr=3e-2)
    assert head.in_features == 16 and ind.accuracy(torch.nn.Sequential(net, head), tx, ty) >= 0.95
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # frozen
    assert ind.transfer_accuracy("probe", user_mlp(), x, y, tx, ty, epochs=60, batch=32, lr=3e-2) >= 0.95


def test_fine_tuning_a_user_mlp_lowers_its_loss_and_trains_the_extractor():
    torch.set_num_threads(1)
    x, y = clusters(90, seed=1)
    net = user_mlp()
    assert ind.feature_dim(net, x) == 16
    before = [p.clone() for p in net.parameters()]
    torch.manual_seed(0)
    untrained = torch.nn.functional.cross_entropy(torch.nn.Sequential(net, torch.nn.Linear(16, 3))(x), y).item()
    model = ind.fine_tune(net, x, y, 3, epochs=30, batch=32, lr=1e-2, backbone_lr_scale=0.5)
    with torch.no_grad():
        trained = torch.nn.functional.cross_entropy(model(x), y).item()
    assert model[0] is net and trained < 0.2 * untrained
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # every extractor tensor moved
    assert ind.transfer_accuracy("scratch", user_mlp(1), x, y, *clusters(300, seed=2), epochs=30, lr=1e-2) >= 0.9


def test_transfer_accuracy_names_a_bad_argument():
    x, y = clusters(12, seed=1)
    with pytest.raises(ValueError, match="method must be one of"):
        ind.transfer_accuracy("lora", user_mlp(), x, y, x, y, epochs=1)
    with pytest.raises(ValueError, match="net must be an nn.Module"):
        ind.transfer_accuracy("probe", "mlp", x, y, x, y, epochs=1)
    with pytest.raises(ValueError, match="test_x must be"):
        ind.transfer_accuracy("probe", user_mlp(), x, y, x, y.float(), epochs=1)
