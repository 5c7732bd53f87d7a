"""Unsupervised transfer (mapping.transfer.unsupervised): rotations, batch-norm calibration, k-means scores, and the
experiment's smoke run on the fake zips of ``omniglot_fixtures``. The real-data test runs only when
``$MAPPING_DATA/omniglot`` holds the official zips.
"""
from __future__ import annotations

import math

import pytest
import torch

from mapping.data.omniglot import load_omniglot
from mapping.experiments.transfer_omniglot import REPRESENTATIONS, TransferConfig, run_unsupervised
from mapping.nn.conv4 import Conv4
from mapping.transfer import unsupervised as uns
from omniglot_fixtures import requires_real


def separable(classes: int = 6, per_class: int = 20, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features far apart per class (a distinct random direction each, tiny noise), and their labels."""
    gen = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(classes, dim, generator=gen)  # (K, d)
    labels = torch.arange(classes).repeat_interleave(per_class)  # (N,)
    return centres[labels] + 0.01 * torch.randn(len(labels), dim, generator=gen), labels  # (N, d), (N,)


def test_rotations_are_the_four_quarter_turns():
    x = torch.rand(3, 1, 5, 5)
    turned, y = uns.rotations(x)
    assert turned.shape == (12, 1, 5, 5) and y.tolist() == [0, 1, 2, 3] * 3 and y.dtype == torch.int64
    for i in range(3):
        for r in range(4):
            assert torch.equal(turned[4 * i + r], torch.rot90(x[i], r, dims=(-2, -1)))
    with pytest.raises(ValueError, match="x must be a non-empty tensor"):
        uns.rotations(torch.rand(3, 1, 5, 4))


def test_cluster_scores_perfect_and_random():
    z, labels = separable()
    scores = uns.cluster_scores(z, labels, 6, seed=0)
    assert scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    noise = torch.randn(600, 16, generator=torch.Generator().manual_seed(1))
    chance = uns.cluster_scores(noise, torch.arange(10).repeat_interleave(60), 10, seed=0)
    assert chance["nmi"] < 0.1 and abs(chance["ari"]) < 0.05
    assert uns.cluster_scores(z, labels, 6, seed=3) == uns.cluster_scores(z, labels, 6, seed=3)


@pytest.mark.parametrize("args, match", [
    ((torch.rand(10), torch.zeros(10, dtype=torch.int64), 2), "features must be a non-empty"),
    ((torch.rand(10, 3), torch.zeros(9, dtype=torch.int64), 2), "labels must be an"),
    ((torch.rand(10, 3), torch.zeros(10, dtype=torch.int64), 0), "k must be an int >= 1"),
    ((torch.rand(10, 3), torch.zeros(10, dtype=torch.int64), 11), "k must be at most"),
    ((torch.rand(0, 3), torch.zeros(0, dtype=torch.int64), 1), "features must be a non-empty"),
])
def test_cluster_scores_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        uns.cluster_scores(*args)


def test_evaluate_unsupervised_clusters_within_groups():
    z, labels = separable(classes=6)
    groups = (labels >= 2).long()  # group 0: 2 characters, group 1: 4
    scores = uns.evaluate_unsupervised(z, labels, groups, seed=0, n_init=2)
    assert scores == pytest.approx({"nmi": 1.0, "ari": 1.0, "groups": 2.0})
    with pytest.raises(ValueError, match="groups must be"):
        uns.evaluate_unsupervised(z, labels, groups[:-1])


def test_calibrate_batch_norm_uses_the_images_and_keeps_parameters():
    torch.manual_seed(0)
    net = Conv4(None, hidden=4, bn="running")
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    images = torch.rand(40, 1, 28, 28)
    uns.calibrate_batch_norm(net, images, batch=8)  # equal chunks: mean of chunk means = mean
    assert not net.training and all(torch.equal(params[n], p) for n, p in net.named_parameters())
    first = net.body[0].norm
    expected = net.body[0].conv(images).mean((0, 2, 3))  # (4,) the first block's mean pre-activation
    assert torch.allclose(first.running_mean, expected, atol=1e-5) and first.momentum == 0.1


def test_features_and_backbones():
    images = torch.rand(6, 1, 28, 28)
    assert torch.equal(uns.features(None, images), images.flatten(1))
    state = uns.random_backbone(images, hidden=4, seed=0)
    z = uns.features(state, images, hidden=4)
    assert z.shape == (6, 4) and torch.equal(z, uns.features(state, images, hidden=4))
    rotation = uns.pretrain_rotation(images, 1, batch=3, hidden=4, seed=0)
    assert rotation.keys() == state.keys() and not torch.equal(rotation["body.0.conv.weight"],
                                                              state["body.0.conv.weight"])
    for bad, match in (({"epochs": 0}, "epochs"), ({"batch": 0}, "batch"), ({"lr": 0.0}, "lr")):
        with pytest.raises(ValueError, match=match):
            uns.pretrain_rotation(images, **{"epochs": 1, **bad})


def test_rotation_pretext_is_learnt():
    """The rotation network predicts the quarter turn of asymmetric shapes well beyond chance (25%)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.zeros(64, 1, 28, 28)
    for i, (r, c) in enumerate(torch.randint(4, 12, (64, 2), generator=gen).tolist()):
        images[i, 0, r:r + 12, c:c + 3] = 1.0  # an upright bar ...
        images[i, 0, r + 9:r + 12, c:c + 10] = 1.0  # ... with a foot to the right: an "L", asymmetric
    torch.manual_seed(0)
    net = Conv4(uns.ROTATIONS, hidden=8, bn="running")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = uns.rotations(images)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net.train()(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (net.eval()(x).argmax(-1) == y).double().mean() > 0.6


def test_run_unsupervised_smoke_on_fake_zips(fake_root, fake_cache):
    config = TransferConfig.for_mode("smoke")
    metrics = run_unsupervised(config, root=fake_root, strict=False)
    for name in REPRESENTATIONS:
        for score in ("nmi", "ari"):
            key = f"unsupervised/{name}/{score}"
            assert -1 <= metrics[key] <= 1 and math.isfinite(metrics[f"{key}/ci95"])
            assert all(f"{key}/seed{s}" in metrics for s in config.seeds)
    assert 0 <= metrics["unsupervised/pixels/nmi"] <= 1 and metrics["unsupervised/seconds"] > 0




@requires_real
def test_real_pixels_cluster_one_alphabet_beyond_chance():
    evaluation = load_omniglot("evaluation")
    alphabet = evaluation.subset(torch.nonzero(evaluation.alphabet_index == 0)[:, 0])  # 20 characters
    x = alphabet.images.reshape(-1, 1, 28, 28)  # (400, 1, 28, 28)
    labels = torch.arange(alphabet.num_classes).repeat_interleave(20)  # (400,)
    pixels = uns.cluster_scores(uns.features(None, x), labels, alphabet.num_classes, seed=0, n_init=3)
    shuffled = uns.cluster_scores(uns.features(None, x), labels[torch.randperm(400)], alphabet.num_classes, 0, 3)
    print(f"\nreal Omniglot, {alphabet.alphabets[0]}: pixel k-means NMI {pixels['nmi']:.3f} ARI {pixels['ari']:.3f}")
    assert pixels["nmi"] > shuffled["nmi"] + 0.1 and pixels["ari"] > shuffled["ari"] + 0.03


def test_train_rotation_teaches_a_users_network_the_rotations():
    """Any network with a 4-way head: an MLP on asymmetric 8x8 images learns to tell their rotations apart."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 8, 8, generator=g) * 0.3
    images[:, :, :3, :3] += 1.0  # a bright corner: the rotation moves it
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    torch.manual_seed(0)
    x, y = uns.rotations(images)

    def accuracy():
        with torch.no_grad():
            return (model(x).argmax(-1) == y).float().mean().item()
    before = accuracy()
    assert uns.train_rotation(model, images, 20, batch=16, lr=1e-2, seed=0) is model
    assert before < 0.5 and accuracy() > 0.95
    with pytest.raises(ValueError, match=r"model must map \(B, C, H, H\) images to \(B, 4\) logits"):
        uns.train_rotation(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)), images, 1)
    with pytest.raises(ValueError, match="model must be an nn.Module"):
        uns.train_rotation("mlp", images, 1)
