"""Model-based meta-learning (mapping.meta.mann) and sequence episodes (mapping.data.sequences)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mapping.data import accuracy_by_instance, episode_sequences, offset_labels
from mapping.meta import MANN, LSTMLearner, cosine_read_weights, least_used, write_weights


def test_read_weights_are_a_softmax_of_cosines():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    memory = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    w = cosine_read_weights(keys, memory)  # (2, 3, 7)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    cos = torch.stack([torch.stack([torch.stack([F.cosine_similarity(keys[b, h], memory[b, i], 0)
                                                 for i in range(7)]) for h in range(3)]) for b in range(2)])
    torch.testing.assert_close(w, cos.softmax(-1))


def test_least_used_marks_the_n_smallest_usages():
    usage = torch.tensor([[0.5, 0.1, 0.9, 0.0], [1.0, 2.0, 0.3, 0.4]])
    torch.testing.assert_close(least_used(usage, 1), torch.tensor([[0., 0., 0., 1.], [0., 0., 1., 0.]]))
    torch.testing.assert_close(least_used(usage, 2), torch.tensor([[0., 1., 0., 1.], [0., 0., 1., 1.]]))
    with pytest.raises(ValueError, match="n must be an int in 1..4"):
        least_used(usage, 5)


def test_the_gate_writes_to_the_last_read_or_the_least_used_slot():
    read_prev = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])  # (1, 1, 4): last read slot 1
    lu_prev = torch.tensor([[0.0, 0.0, 0.0, 1.0]])  # (1, 4): least used slot 3
    torch.testing.assert_close(write_weights(torch.ones(1, 1, 1), read_prev, lu_prev), read_prev)
    torch.testing.assert_close(write_weights(torch.zeros(1, 1, 1), read_prev, lu_prev), lu_prev[:, None])
    half = write_weights(torch.full((1, 1, 1), 0.5), read_prev, lu_prev)
    torch.testing.assert_close(half, torch.tensor([[[0.0, 0.5, 0.0, 0.5]]]))


def test_in_the_model_a_closed_gate_writes_to_the_least_used_slot():
    torch.manual_seed(0)
    model = MANN(6, 3, controller=8, slots=5, width=4, heads=1)
    with torch.no_grad():
        model.alpha.bias.fill_(-50.0)  # sigmoid(alpha) = 0: write to the least used slot only
        model.alpha.weight.zero_()
    y = torch.tensor([[0, 1, 2, 0]])
    trace = []
    model(torch.randn(1, 4, 6), offset_labels(y, 3), trace)
    for before, now in zip(trace, trace[1:]):
        slot = before["usage"][0].argmin()
        assert now["write"][0, 0].argmax() == slot and now["write"][0, 0, slot] > 0.999


def test_label_offset_is_exact():
    y = torch.tensor([[2, 0, 1], [1, 1, 0]])
    expected = torch.tensor([[[0., 0., 0.], [0., 0., 1.], [1., 0., 0.]],
                             [[0., 0., 0.], [0., 1., 0.], [0., 1., 0.]]])
    torch.testing.assert_close(offset_labels(y, 3), expected)


@pytest.mark.parametrize("y, match", [(torch.tensor([[0]]), "at least 2 steps"), (torch.tensor([[0, 3]]), "labels"),
                                      (torch.tensor([[0.0, 1.0]]), "int64")])
def test_bad_labels(y, match):
    with pytest.raises(ValueError, match=match):
        offset_labels(y, 3)


def test_episodes_shuffle_labels_and_present_each_class_equally():
    images = torch.arange(10)[:, None, None, None].expand(10, 20, 2, 2).float()  # class c drawn as the value c
    images = images + torch.arange(20)[None, :, None, None] / 100  # drawing d adds d / 100
    x, y = episode_sequences(images, 5, 4, 30, torch.Generator().manual_seed(0))
    assert x.shape == (30, 20, 4) and y.shape == (30, 20)
    assert all((row.bincount(minlength=5) == 4).all() for row in y)
    first = set()
    for xe, ye in zip(x, y):
        classes = xe[:, 0].floor()  # (T,)
        for label in range(5):  # one class per label within an episode
            assert classes[ye == label].unique().numel() == 1
        first.add(int(classes[ye == 0][0]))
        drawings = (xe[:, 0] * 100).round() % 100 + 100 * classes
        assert drawings.unique().numel() == 20  # no drawing repeated in an episode
    assert len(first) > 3  # label 0 means different classes in different episodes


def test_memory_is_reset_between_episodes_and_batch_rows_are_independent():
    torch.manual_seed(0)
    model = MANN(6, 3, controller=8, slots=6, width=4, heads=2)
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(1, 5, 6, generator=g), torch.randn(1, 5, 6, generator=g)
    ya = offset_labels(torch.randint(0, 3, (1, 5), generator=g), 3)
    yb = offset_labels(torch.randint(0, 3, (1, 5), generator=g), 3)
    alone = model(xb, yb)
    model(xa, ya)  # another episode first: nothing may carry over
    torch.testing.assert_close(model(xb, yb), alone)
    torch.testing.assert_close(model(torch.cat([xa, xb]), torch.cat([ya, yb]))[1:], alone)


def test_accuracy_by_instance_counts_presentations():
    y = torch.tensor([[0, 1, 0, 1, 0]])
    logits = F.one_hot(torch.tensor([[1, 1, 0, 0, 0]]), 2).float()  # right at t = 1, 2, 4
    torch.testing.assert_close(accuracy_by_instance(logits, y, 3),
                               torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("kw, match", [(dict(heads=9), "heads"), (dict(gamma=1.5), "gamma"), (dict(width=0), "width")])
def test_bad_model_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        MANN(6, 3, slots=8, **kw)


def test_a_short_training_run_learns_beyond_chance():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    templates = (torch.rand(40, 1, 6, 6, generator=g) > 0.5).float()  # 40 classes of noisy 6x6 patterns
    images = (templates + 0.3 * torch.randn(40, 20, 6, 6, generator=g)).clamp(0, 1)  # (40, 20, 6, 6)
    model = MANN(36, 3, controller=64, slots=16, width=16, heads=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        x, y = episode_sequences(images[:30], 3, 5, 16, g)
        loss = F.cross_entropy(model(x, offset_labels(y, 3)).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = episode_sequences(images[30:], 3, 5, 200, g)  # held-out classes
    with torch.no_grad():
        acc = accuracy_by_instance(model(x, offset_labels(y, 3)), y, 5)
    # chance is 1/3 at every step. 300 steps teach the network which labels an episode has not used yet (a
    # first presentation is then guessed better than chance); binding a label to its class in memory, which lifts
    # the later presentations, takes a much longer run (the paper trains for 100,000 episodes)
    assert acc.mean() > 0.4
    lstm = LSTMLearner(36, 3, hidden=8)
    assert lstm(x[:2], offset_labels(y[:2], 3)).shape == (2, 15, 3)


def test_mann_experiment_config_errors_name_the_argument():
    from mapping.experiments.omniglot_mann import MannConfig, build
    with pytest.raises(ValueError, match="models must be a non-empty tuple"):
        MannConfig(models=("ntm",))
    with pytest.raises(ValueError, match="instances must be an int >= 1"):
        MannConfig(instances=0)
    with pytest.raises(ValueError, match="model must be one of"):
        build("gru", MannConfig())


def test_mann_evaluation_counts_every_presentation_once():
    """:func:`evaluate` on a model that always answers label 0 scores 100 / n_way % at every instance in
    expectation (labels are shuffled per episode), and the same episodes come back for every model."""
    from torch import nn

    from mapping.experiments.omniglot_mann import MannConfig, evaluate

    class Zero(nn.Module):
        def forward(self, x, y_prev):
            logits = torch.zeros(*x.shape[:2], 5)  # (B, T, 5)
            logits[..., 0] = 1
            return logits
    g = torch.Generator().manual_seed(0)
    images = torch.rand(30, 20, 4, 4, generator=g)  # (classes, examples, 4, 4)
    config = MannConfig(size=4, test_episodes=400)
    acc = evaluate(Zero(), config, images)  # (10,)
    assert acc.shape == (10,)
    assert (acc - 20).abs().max() < 6  # 400 episodes: each entry a mean of 400 Bernoulli(0.2) draws, sd 2%
    torch.testing.assert_close(evaluate(Zero(), config, images), acc)


def test_key_strength_sharpens_reads_towards_the_best_match():
    """A strength of 1 is the paper's softmax of cosines; a large one puts the weight on the most similar slot."""
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    memory = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    plain = cosine_read_weights(keys, memory)  # (2, 3, 7)
    torch.testing.assert_close(cosine_read_weights(keys, memory, torch.ones(2, 3, 1, dtype=torch.float64)), plain)
    sharp = cosine_read_weights(keys, memory, torch.full((2, 3, 1), 200.0, dtype=torch.float64))
    best = F.one_hot(plain.argmax(-1), 7).double()  # (2, 3, 7)
    torch.testing.assert_close(sharp, best, atol=1e-6, rtol=0)
    assert plain.max() / plain.min() <= torch.e ** 2 + 1e-9  # cosines in [-1, 1]: never sharper than e^2 : 1
    model = MANN(6, 3, controller=8, slots=10, width=4, heads=2, key_strength=True)
    assert model.beta.out_features == 2
    logits = model(torch.rand(2, 5, 6), offset_labels(torch.randint(0, 3, (2, 5)), 3))
    logits.sum().backward()
    assert model.beta.weight.grad.abs().sum() > 0  # the strength is learned


@pytest.mark.parametrize("kwargs, match", [
    (dict(inputs=0, n_way=5), "inputs must be an int >= 1"),
    (dict(inputs=4, n_way=True), "n_way must be an int >= 1"),
    (dict(inputs=4, n_way=5, slots=2, heads=4), r"heads must be an int in \[1, 2\] \(at most slots\)"),
    (dict(inputs=4, n_way=5, gamma=1.5), r"gamma must be in \[0, 1\]"),
    (dict(inputs=4, n_way=5, gamma=float("nan")), "gamma must be a finite real number >= 0"),
])
def test_mann_names_a_bad_size(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MANN(**kwargs)
