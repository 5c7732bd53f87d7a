"""Metric-based methods and the Conv-4 backbone: each core against explicit loops, the batch-norm
policies, vmap over tasks, learning on synthetic classes, and bad input."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from mapping.data import TaskBatch
from mapping.data.episodes import EpisodeSampler
from mapping.meta.metric import (FullContextEmbedding, MatchingNetwork, PrototypicalNetwork, cosine_attention,
                                 matching_log_probs, protonet_logits, prototypes)
from mapping.meta.siamese import (SiameseNetwork, class_scores, pairs_from_batch, pairwise_siamese_logits,
                                  sample_pairs, siamese_logits)
from mapping.nn.conv4 import Conv4


def episode(tasks=3, n_way=4, k_shot=2, q=5, dim=6, seed=0, shuffle=True):
    """Random embeddings with labels in a random order per task (every class k_shot times)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_way).repeat_interleave(k_shot).repeat(tasks, 1)  # (tasks, n*k)
    if shuffle:
        y = torch.stack([row[torch.randperm(len(row), generator=g)] for row in y])
    return torch.randn(tasks, n_way * k_shot, dim, generator=g), y, torch.randn(tasks, q, dim, generator=g)


def images_batch(tasks=2, n_way=3, k_shot=2, q=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y_s = torch.arange(n_way).repeat_interleave(k_shot).repeat(tasks, 1)  # (tasks, n*k)
    y_q = torch.randint(n_way, (tasks, q), generator=g)  # (tasks, q)
    return TaskBatch(torch.randn(tasks, n_way * k_shot, 1, 28, 28, generator=g), y_s,
                     torch.randn(tasks, q, 1, 28, 28, generator=g), y_q)


# ---------------------------------------------------------------- cores against loops (float64)

def test_protonet_logits_match_loops(float64):
    z_s, y_s, z_q = episode()
    logits = protonet_logits(z_q, prototypes(z_s, y_s, 4))  # (tasks, q, n_way)
    for t in range(3):
        for c in range(4):
            members = [z_s[t, i] for i in range(z_s.shape[1]) if y_s[t, i] == c]
            proto = sum(members) / len(members)
            for j in range(z_q.shape[1]):
                expected = -sum((z_q[t, j, d] - proto[d]) ** 2 for d in range(z_s.shape[2]))
                torch.testing.assert_close(logits[t, j, c], expected)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_matching_attention_matches_loops(float64, scale):
    z_s, y_s, z_q = episode()
    attention = cosine_attention(z_q, z_s, scale)  # (tasks, q, m)
    log_p = matching_log_probs(z_q, z_s, y_s, 4, scale)  # (tasks, q, n_way)
    for t in range(3):
        for j in range(z_q.shape[1]):
            cos = [float(z_q[t, j] @ z_s[t, i] / (z_q[t, j].norm() * z_s[t, i].norm())) for i in range(z_s.shape[1])]
            total = sum(math.exp(scale * c) for c in cos)
            a = [math.exp(scale * c) / total for c in cos]
            torch.testing.assert_close(attention[t, j], torch.tensor(a))
            for c in range(4):
                p = sum(a[i] for i in range(len(a)) if y_s[t, i] == c)
                torch.testing.assert_close(log_p[t, j, c], torch.tensor(math.log(p)))
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(3, 5))


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_siamese_scores_match_loops(float64, reduce):
    z_s, y_s, z_q = episode()
    w, b = torch.randn(6), torch.tensor(0.3)
    pair = pairwise_siamese_logits(z_q, z_s, w, b)  # (tasks, q, m)
    scores = class_scores(pair, y_s, 4, reduce)  # (tasks, q, n_way)
    for t in range(3):
        for j in range(z_q.shape[1]):
            logit = [float(sum(w[d] * abs(z_q[t, j, d] - z_s[t, i, d]) for d in range(6)) + b)
                     for i in range(z_s.shape[1])]
            torch.testing.assert_close(pair[t, j], torch.tensor(logit))
            for c in range(4):
                shots = [logit[i] for i in range(len(logit)) if y_s[t, i] == c]
                expected = max(shots) if reduce == "max" else sum(shots) / len(shots)
                torch.testing.assert_close(scores[t, j, c], torch.tensor(expected))
    p = torch.sigmoid(siamese_logits(z_q[0, 0], z_s[0, 0], w, b))
    torch.testing.assert_close(p, 1 / (1 + torch.exp(-(w @ (z_q[0, 0] - z_s[0, 0]).abs() + b))))


def test_protonet_is_invariant_to_support_order(float64):
    z_s, y_s, z_q = episode(shuffle=False)
    perm = torch.randperm(z_s.shape[1], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(protonet_logits(z_q, prototypes(z_s[:, perm], y_s[:, perm], 4)),
                               protonet_logits(z_q, prototypes(z_s, y_s, 4)))
    torch.manual_seed(0)
    net, batch = PrototypicalNetwork(Conv4(hidden=8)), images_batch()
    out = net(batch.support_x, batch.support_y, batch.query_x, 3)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(2))
    permuted = net(batch.support_x[:, perm], batch.support_y[:, perm], batch.query_x, 3)
    torch.testing.assert_close(out, permuted)


@pytest.mark.parametrize("cls", [PrototypicalNetwork, MatchingNetwork, SiameseNetwork])
def test_modules_embed_all_tasks_in_one_backbone_call(cls):
    torch.manual_seed(0)
    backbone = Conv4(hidden=8, bn="none")
    net, batch = cls(backbone), images_batch()
    calls = []
    backbone.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    out = net(batch.support_x, batch.support_y, batch.query_x, 3)
    assert out.shape == (2, 4, 3) and calls == [(2 * (6 + 4), 1, 28, 28)]
    z_s, z_q = backbone(batch.support_x), backbone(batch.query_x)  # bn="none": no cross-example coupling
    if cls is PrototypicalNetwork:
        expected = protonet_logits(z_q, prototypes(z_s, batch.support_y, 3))
    elif cls is MatchingNetwork:
        expected = matching_log_probs(z_q, z_s, batch.support_y, 3)
    else:
        w, b = net.distance.weight[0], net.distance.bias[0]
        expected = class_scores(pairwise_siamese_logits(z_q, z_s, w, b), batch.support_y, 3)
    torch.testing.assert_close(out, expected)
    loss = net.meta_loss(batch)
    accuracy = net.diagnostics["accuracy"]
    assert loss.dim() == 0 and torch.isfinite(loss) and 0 <= accuracy <= 1
    loss.backward()


# ---------------------------------------------------------------- Conv-4

@pytest.mark.parametrize("kwargs, dim", [({}, 64), ({"strided": True}, 64), ({"hidden": 16}, 16),
                                         ({"out_features": 5}, 5), ({"strided": True, "out_features": 5}, 5)])
def test_conv4_shapes(kwargs, dim):
    net = Conv4(**kwargs)
    assert net(torch.randn(2, 3, 1, 28, 28)).shape == (2, 3, dim) and net.out_dim == dim
    assert net(torch.randn(4, 1, 28, 28)).shape == (4, dim)
    assert net.embed(torch.randn(4, 1, 28, 28)).shape == (4, kwargs.get("hidden", 64))


def test_conv4_head_names_and_layout():
    net = Conv4(5)
    assert net.head_names() == ["head.weight", "head.bias"]
    assert [n for n, _ in net.named_parameters()][:4] == ["body.0.conv.weight", "body.0.conv.bias",
                                                          "body.0.norm.weight", "body.0.norm.bias"]
    assert [type(m).__name__ for m in net.body[0].children()] == ["Conv2d", "BatchStatNorm2d", "MaxPool2d"]
    assert net.body[0].conv.stride == (1, 1) and Conv4(strided=True).body[0].conv.stride == (2, 2)
    with pytest.raises(ValueError, match="no head"):
        Conv4().head_names()


def test_bn_batch_has_no_state_and_ignores_train_eval():
    torch.manual_seed(0)
    net, x = Conv4(hidden=8, bn="batch"), torch.randn(6, 1, 28, 28)
    assert list(net.buffers()) == []
    train_out = net.train()(x)
    torch.testing.assert_close(net.eval()(x), train_out, rtol=0, atol=0)
    normed = net.body[0].norm(net.body[0].conv(x))  # (6, 8, 28, 28)
    torch.testing.assert_close(normed.mean((0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)


def test_bn_running_and_none():
    torch.manual_seed(0)
    net, x = Conv4(hidden=8, bn="running"), torch.randn(6, 1, 28, 28)
    assert {n.split(".")[-1] for n, _ in net.named_buffers()} == {"running_mean", "running_var", "num_batches_tracked"}
    train_out = net.train()(x)
    assert not torch.allclose(net.eval()(x), train_out)
    plain = Conv4(hidden=8, bn="none")
    assert list(plain.buffers()) == [] and not any("norm" in n for n, _ in plain.named_parameters())


def test_bn_batch_under_vmap_equals_loop_over_tasks(float64):
    torch.manual_seed(0)
    net, x = Conv4(hidden=8, out_features=3, bn="batch"), torch.randn(4, 5, 1, 28, 28)
    params = dict(net.named_parameters())
    vmapped = vmap(lambda p, xt: functional_call(net, p, (xt,)), in_dims=(None, 0))(params, x)  # (4, 5, 3)
    looped = torch.stack([net(x[t]) for t in range(4)])  # each task its own statistics
    torch.testing.assert_close(vmapped, looped)
    assert not torch.allclose(net(x), looped)  # one call on all tasks pools the statistics
    g_vmap = torch.autograd.grad(vmapped.square().sum(), list(params.values()))
    g_loop = torch.autograd.grad(looped.square().sum(), list(params.values()))
    for a, b in zip(g_vmap, g_loop):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- full-context embeddings

def test_full_context_embedding_shapes_and_skip():
    torch.manual_seed(0)
    fce, z_s, z_q = FullContextEmbedding(6, steps=3), torch.randn(2, 8, 6), torch.randn(2, 5, 6)
    f, g = fce(z_q, z_s)
    assert f.shape == (2, 5, 6) and g.shape == (2, 8, 6)
    h, _ = fce.support_lstm(z_s)
    torch.testing.assert_close(g, h[..., :6] + h[..., 6:] + z_s)
    f0, _ = FullContextEmbedding(6, steps=0)(z_q, z_s)
    torch.testing.assert_close(f0, z_q)


def test_matching_network_with_fce_forward_backward():
    torch.manual_seed(0)
    net, batch = MatchingNetwork(Conv4(hidden=8), fce=True, steps=2), images_batch()
    log_p = net(batch.support_x, batch.support_y, batch.query_x, 3)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(2, 4))
    loss = net.meta_loss(batch)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.fce.gates.weight.grad.abs().sum() > 0 and net.fce.support_lstm.weight_ih_l0.grad.abs().sum() > 0


# ---------------------------------------------------------------- pair samplers

def id_images(classes=6, examples=4):
    """Each image is constant, ``100 * class + example``, so pairs can be decoded."""
    ids = 100 * torch.arange(classes)[:, None] + torch.arange(examples)  # (classes, examples)
    return ids[:, :, None, None].float().expand(classes, examples, 28, 28).clone()


def test_sample_pairs_are_balanced_and_correct():
    x1, x2, same = sample_pairs(id_images(), 101, torch.Generator().manual_seed(0))
    assert x1.shape == x2.shape == (101, 1, 28, 28) and same.shape == (101,) and same.sum() == 50
    a, b = x1[:, 0, 0, 0].long(), x2[:, 0, 0, 0].long()  # (pairs,)
    assert torch.equal((a // 100 == b // 100).float(), same) and (a != b).all()
    again = sample_pairs(id_images(), 101, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x1) and torch.equal(again[2], same)


def test_pairs_from_batch_are_balanced_and_correct():
    batch = EpisodeSampler(id_images(), 3, 1, 2).sample(4, torch.Generator().manual_seed(0))
    x1, x2, same = pairs_from_batch(batch, 20, torch.Generator().manual_seed(1))
    assert x1.shape == (4, 20, 1, 28, 28) and same.shape == (4, 20) and (same.sum(1) == 10).all()
    a, b = x1[..., 0, 0, 0].long(), x2[..., 0, 0, 0].long()  # (tasks, pairs)
    assert torch.equal((a // 100 == b // 100).float(), same) and (a != b).all()
    for t in range(4):  # every image comes from its own task
        assert set((a[t] // 100).tolist()) <= set(batch.info["classes"][t].tolist())


# ---------------------------------------------------------------- learning on synthetic classes

def synthetic_classes(classes=40, examples=20, seed=0, shift=2, noise=0.3):
    """Class = a fixed random blob image (7x7 noise upsampled, thresholded); example = it shifted + noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(classes, 1, 7, 7, generator=g)  # (classes, 1, 7, 7)
    smooth = F.interpolate(low, size=28, mode="bilinear", align_corners=False)  # (classes, 1, 28, 28)
    protos = (smooth > 0.6).float()[:, 0]  # (classes, 28, 28)
    shifts = torch.randint(-shift, shift + 1, (classes, examples, 2), generator=g).tolist()
    images = torch.stack([torch.stack([protos[c].roll(tuple(shifts[c][e]), (0, 1)) for e in range(examples)])
                          for c in range(classes)])  # (classes, examples, 28, 28)
    return images + noise * torch.randn(images.shape, generator=g)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_classes()


@pytest.mark.slow
@pytest.mark.parametrize("make", [PrototypicalNetwork, functools.partial(MatchingNetwork, scale=10.0),
                                  functools.partial(MatchingNetwork, fce=True), SiameseNetwork],
                         ids=["protonet", "matching", "matching-fce", "siamese"])
def test_training_beats_chance_on_held_out_classes(synthetic, make):
    torch.manual_seed(0)
    train, test = EpisodeSampler(synthetic[:30], 5, 1, 5), EpisodeSampler(synthetic[30:], 5, 1, 5)
    net = make(Conv4(hidden=16))
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):  # 5-way 1-shot episodes, one task each
        loss = net.meta_loss(train.sample(1, g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held_out = test.sample(100, torch.Generator().manual_seed(2))
    with torch.no_grad():  # one task per call, as in training: bn="batch" statistics of one episode
        accuracy = sum(float((net.predict(*held_out.task(t).tensors()[:3]).argmax(-1) == held_out.task(t).query_y)
                             .float().mean()) for t in range(100)) / 100
    assert accuracy >= 0.6, f"held-out 5-way 1-shot accuracy {accuracy:.3f} (chance 0.2)"


# ---------------------------------------------------------------- bad input

def bad(field, value):
    batch = images_batch()
    kwargs = dict(support_x=batch.support_x, support_y=batch.support_y, query_x=batch.query_x, n_way=3)
    kwargs[field] = value
    return kwargs


@pytest.mark.parametrize("cls", [PrototypicalNetwork, MatchingNetwork, SiameseNetwork])
@pytest.mark.parametrize("field, value, match", [
    ("support_y", torch.tensor([[0, 0, 1, 1, 2, 3]] * 2), r"support_y must hold labels in 0\.\.2"),
    ("support_y", torch.tensor([[0, 0, 1, 1, 2, -1]] * 2), r"support_y must hold labels in 0\.\.2"),
    ("support_y", torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 2, 0, 1, 2]]), "no example of class 2 in task 0"),
    ("support_y", torch.tensor([[0.0, 0, 1, 1, 2, 2]] * 2), "support_y must hold integer class labels"),
    ("support_y", torch.tensor([[True, False, True, False, True, False]] * 2), "support_y must hold integer"),
    ("support_y", torch.tensor([[0, 0, 1, 1, 2, 2]] * 3), "support_y has shape"),
    ("query_x", torch.randn(3, 4, 1, 28, 28), "query_x has shape"),
    ("query_x", torch.randn(2, 4, 1, 27, 27), "query_x has shape"),
    ("support_x", torch.randn(2, 6), "support_x must be a tensor of shape"),
    ("n_way", 0, "n_way must be an int >= 1"),
    ("n_way", 2.0, "n_way must be an int >= 1"),
])
def test_bad_episode(cls, field, value, match):
    net = cls(Conv4(hidden=4))
    with pytest.raises(ValueError, match=match):
        net(**bad(field, value))


def test_bad_functional_input():
    z_s, y_s, z_q = episode()
    with pytest.raises(ValueError, match="z_query has 2 tasks"):
        protonet_logits(z_q[:2], prototypes(z_s, y_s, 4))
    with pytest.raises(ValueError, match="z_query has embedding dim 5"):
        cosine_attention(z_q[..., :5], z_s)
    with pytest.raises(ValueError, match="y_support has shape"):
        prototypes(z_s, y_s[:, :-1], 4)
    with pytest.raises(ValueError, match=r"support_y must hold labels in 0\.\.2"):
        matching_log_probs(z_q, z_s, y_s, 3)
    with pytest.raises(ValueError, match="reduce must be one of"):
        class_scores(torch.zeros(3, 5, 8), y_s, 4, "median")
    with pytest.raises(ValueError, match="scale must be"):
        cosine_attention(z_q, z_s, scale=0.0)
    with pytest.raises(ValueError, match="z_support has embedding dim 6"):
        FullContextEmbedding(4)(z_q, z_s)


def test_bad_loss_and_pair_input():
    batch = images_batch()
    net = PrototypicalNetwork(Conv4(hidden=4))
    with pytest.raises(ValueError, match="batch must be a mapping.data.TaskBatch"):
        net.meta_loss(batch.tensors())
    wrong_query = TaskBatch(batch.support_x, batch.support_y, batch.query_x, batch.query_y + 5)
    with pytest.raises(ValueError, match=r"query_y must hold labels in 0\.\.2"):
        net.meta_loss(wrong_query)
    for pairs in (1, 2.5, True):
        with pytest.raises(ValueError, match="pairs must be an int >= 2"):
            sample_pairs(id_images(), pairs)
    with pytest.raises(ValueError, match="images must be a tensor of shape"):
        sample_pairs(id_images()[:1], 4)
    one_shot = TaskBatch(batch.support_x[:, ::2], batch.support_y[:, ::2], batch.query_x[:, :1],
                         torch.full_like(batch.query_y[:, :1], 3))  # four examples, four labels
    with pytest.raises(ValueError, match="without two examples of one label"):
        pairs_from_batch(one_shot, 4)
    with pytest.raises(ValueError, match="bn must be one of"):
        Conv4(bn="instance")
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(\.\.\., 1, 28, 28\)"):
        Conv4()(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="dim must give the backbone's embedding size"):
        MatchingNetwork(torch.nn.Flatten(), fce=True)


def test_siamese_pair_training_interface():
    torch.manual_seed(0)
    net = SiameseNetwork(Conv4(hidden=4))
    x1, x2, same = sample_pairs(id_images(), 8, torch.Generator().manual_seed(0))
    loss, accuracy = net.pair_loss(x1, x2, same)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(net.verify(x1, x2), same))
    loss.backward()
    batch = EpisodeSampler(id_images(), 3, 1, 2).sample(2, torch.Generator().manual_seed(0))
    x1, x2, same = pairs_from_batch(batch, 6, torch.Generator().manual_seed(1))
    assert net.verify(x1, x2, batch_dims=2).shape == (2, 6)
    with pytest.raises(ValueError, match="batch_dims must be an int"):
        net.verify(x1, x2, batch_dims=0)
    with pytest.raises(ValueError, match="same has shape"):
        net.pair_loss(x1, x2, same[0], batch_dims=2)


@pytest.mark.parametrize("method", ["protonet", "matching", "siamese"])
def test_accuracy_from_precomputed_embeddings_equals_per_episode(method):
    """Evaluation embeds every test image once and samples episodes from the table: the same episodes and
    the same predictions as embedding each episode's images (eval-mode batch norm)."""
    from mapping.experiments.omniglot_metric import MetricConfig, accuracy, build

    torch.manual_seed(0)
    model = build(MetricConfig(method=method, hidden=16))
    images = torch.rand(12, 20, 28, 28)  # (classes, examples, H, W)
    sampler = EpisodeSampler(images, 5, 2, 3)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):  # move the weights and the running statistics away from their initial values
        loss = model.meta_loss(sampler.sample(1, torch.Generator().manual_seed(_)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fast = accuracy(model, sampler, 40, torch.Generator().manual_seed(1), chunk=7)  # (40,)
    slow = accuracy(model, sampler, 40, torch.Generator().manual_seed(1), chunk=7, precompute=False)
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)
    assert 0 < slow.mean() < 1  # not trivially equal
    assert isinstance(model.backbone, Conv4)  # the backbone is put back


def test_batch_statistics_models_are_not_evaluated_from_a_table():
    from mapping.experiments.omniglot_metric import query_independent
    assert query_independent(PrototypicalNetwork(Conv4(hidden=8, bn="running")))
    assert not query_independent(PrototypicalNetwork(Conv4(hidden=8, bn="batch")))
