"""Digits -> shifted digits domain adaptation (:mod:`mapping.experiments.digits_da`): data split, label hygiene,
learning, the PCA views and bad input."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from mapping.data.moons import shifted_digits
from mapping.data.multidigits import load_digits
from mapping.stats import accuracy
from mapping.experiments.digits_da import (ADAPTERS, DigitsDAConfig, domain_separability, domains,
                                           feature_pca, feature_views, run_digits, train)


@pytest.mark.parametrize("validation", [False, True])
def test_source_and_target_images_are_disjoint_and_labels_consistent(validation):
    images, labels = load_digits()  # (1797, 8, 8), (1797,)
    data = domains("texture", seed=0, validation=validation)
    source, target, test = (set(i.tolist()) for i in (data.source_index, data.target_index, data.test_index))
    assert not source & target and not source & test and not target & test  # three disjoint sets of images
    assert len(source) == len(data.source_x) and abs(len(source) - len(target)) <= 1
    assert len(source | target | test) == (1347 if validation else 1797)  # validation: training images only
    assert not test & set(domains("texture", seed=0).test_index.tolist()) if validation else len(test) == 450
    assert torch.equal(data.source_y, labels[data.source_index]) and torch.equal(data.target_y,
                                                                                  labels[data.target_index])
    assert torch.equal(data.test_y, labels[data.test_index])
    assert torch.equal(data.source_x, images[data.source_index][:, None].expand(-1, 3, -1, -1))  # plain
    assert torch.equal(data.test_source_x, images[data.test_index][:, None].expand(-1, 3, -1, -1))
    for x, index in ((data.target_x, data.target_index), (data.test_x, data.test_index)):
        split = "test" if index is data.test_index and not validation else "train"
        shifted = shifted_digits(split, "texture", seed=0)
        row = {int(i): r for r, i in enumerate(shifted.index)}
        assert torch.equal(x, shifted.target_x[[row[int(i)] for i in index]])  # the shifted image of that digit
        assert (x[:, 0] != x[:, 1]).float().mean() > 0.9  # coloured, not the plain digit
    assert data.test_y.bincount(minlength=10).min() > 0 and data.target_y.bincount(minlength=10).min() > 0


@pytest.mark.parametrize("method", ADAPTERS)
def test_adaptation_never_reads_target_labels(method):
    data = domains("texture", seed=0)
    garbage = dataclasses.replace(data, target_y=torch.randint(10, data.target_y.shape),
                                  test_y=torch.zeros_like(data.test_y))
    config = DigitsDAConfig(steps=4, batch=16)
    a, b = train(method, data, config, seed=3), train(method, garbage, config, seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    c = train("target_supervised", garbage, config, seed=3)  # the upper bound does read them
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_short_run_learns_above_chance_and_reports_every_metric():
    config = DigitsDAConfig(steps=150, seeds=(0,), methods=("source_only", "dann", "target_supervised"))
    metrics, models = run_digits(config)
    assert metrics["digits/source_only/seed0"] == metrics["digits/source_only/acc"]
    data = domains("texture", seed=0)
    assert accuracy(models["source_only"](data.source_x), data.source_y) > 0.6  # chance: 0.1
    assert metrics["digits/target_supervised/acc"] > 30
    assert {"digits/dann/gap_closed", "digits/dann/gap_closed/seed0", "digits/dann/separability",
            "digits/source_only/separability/seed0"} <= set(metrics)
    assert 40 <= metrics["digits/source_only/separability"] <= 100
    low, high = metrics["digits/source_only/acc"], metrics["digits/target_supervised/acc"]
    assert metrics["digits/dann/gap_closed"] == pytest.approx((metrics["digits/dann/acc"] - low) / (high - low))
    assert 0 <= domain_separability(models["dann"], data) <= 100


def test_pca_views_have_the_right_shapes():
    data = domains("texture", seed=0)
    model = train("source_only", data, DigitsDAConfig(steps=2), seed=0)
    src, tgt = feature_pca(model, data.source_x[:20], data.target_x[:30])
    assert src.shape == (20, 2) and tgt.shape == (30, 2) and torch.isfinite(torch.cat([src, tgt])).all()
    assert (src.mean(0) >= 0).all()  # signed towards the source
    pooled = torch.cat([src, tgt])  # (50, 2)
    assert pooled.mean(0).abs().max() < 1e-4 and pooled[:, 0].var() >= pooled[:, 1].var()  # centred, ordered
    views = feature_views({"source_only": model, "dann": model}, data)
    assert set(views) == {"source_only", "dann"} and views["dann"][0].shape == (len(data.test_x), 2)


def test_bad_input_errors():
    data = domains("texture", seed=0)
    with pytest.raises(ValueError, match="method must be one of"):
        train("dan", data, DigitsDAConfig(steps=1), seed=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        DigitsDAConfig(kind="blur")
    with pytest.raises(ValueError, match="kind must be one of"):
        domains("blur")
    with pytest.raises(ValueError, match="methods must be a non-empty tuple"):
        DigitsDAConfig(methods=("source_only", "dan"))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        DigitsDAConfig(steps=0)
    with pytest.raises(ValueError, match="validation must be True or False"):
        domains("texture", 0, validation="yes")
    with pytest.raises(ValueError, match="source_x must be a non-empty"):
        feature_pca(train("source_only", data, DigitsDAConfig(steps=1), seed=0), data.source_x[:, :, :4], data.test_x)
    with pytest.raises(ValueError, match="have no trained model"):
        feature_views({}, data)
    assert DigitsDAConfig.for_mode("smoke").steps < DigitsDAConfig.for_mode("quick").steps \
        <= DigitsDAConfig.for_mode("full").steps
