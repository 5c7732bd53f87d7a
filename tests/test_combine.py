"""Chapter 2.4's experiment (mapping.experiments.combine): ProtoNets from a random, a transferred and a multi-task
start, on one budget."""
from __future__ import annotations

import pytest
import torch

from mapping.data import omniglot_multitask
from mapping.data.omniglot import load_omniglot
from mapping.experiments import combine as co
from mapping.meta import PrototypicalNetwork
from mapping.experiments import omniglot_backbone as ob
from test_transfer_inductive import templated_split


def tiny(**overrides) -> co.CombineConfig:
    kw = dict(hidden=8, pretrain_epochs=1, pretrain_drawers=5, episodes=4, checkpoints=(0, 2, 4), train_way=5,
              test_episodes=10, settings=((5, 1),), seeds=(0, 1))
    return co.CombineConfig(**{**kw, **overrides})


def test_multitask_data_matches_omniglot_multitask(fake_root, fake_cache):
    expected = omniglot_multitask("train", train_drawers=7, standardise=True, root=fake_root, strict=False)
    x, y = co.multitask_data(load_omniglot("background", fake_root, strict=False), 7)
    torch.testing.assert_close(x, expected.x)
    for task in ("alphabet", "character", "ink"):
        torch.testing.assert_close(y[task], expected.targets[task])


def test_multitask_pretraining_learns_and_gives_a_backbone():
    torch.set_num_threads(1)
    split = templated_split(24, seed=3)
    split = type(split)(split.images, split.character_ids, torch.arange(24) % 3, split.rotation,
                        ("A", "B", "C"), split.names)  # three alphabets
    state, losses = co.pretrain_multitask(split, 8, drawers=10, batch=32, lr=3e-3, hidden=8, seed=0)
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]
    trained, fresh = ob.backbone(state, 8), ob.backbone(None, 8)
    assert set(trained.state_dict()) == set(fresh.state_dict())
    assert not torch.equal(trained.state_dict()["body.0.conv.weight"], fresh.state_dict()["body.0.conv.weight"])


def test_evaluation_and_meta_training_are_seeded_and_the_same_for_every_start():
    torch.set_num_threads(1)
    split = templated_split(30, seed=1)
    config = tiny(episodes=3, checkpoints=(0, 3))
    model = PrototypicalNetwork(ob.backbone(None, 8, 0))
    assert co.evaluate(model, config, split, 0) == co.evaluate(model, config, split, 0)
    assert co.meta_train(None, config, split, split, 0) == co.meta_train(None, config, split, split, 0)


def test_evaluation_embeds_once_and_scores_as_each_setting_alone():
    """One table of embeddings for every setting gives each setting's own episode accuracies, exactly."""
    from mapping.experiments.omniglot_metric import accuracy
    split = templated_split(30, seed=4)
    config = tiny(settings=((5, 1), (10, 1), (5, 3)), test_episodes=12)
    model = PrototypicalNetwork(ob.backbone(None, 8, 0))
    got = co.evaluate(model, config, split, 7)
    for n, k in config.settings:
        alone = accuracy(model, split.sampler(n, k, config.test_query), config.test_episodes,
                         torch.Generator().manual_seed(7 + 1000 * n + k))  # (E,)
        assert got[f"{n}w{k}s"] == 100 * alone.mean().item()


def test_meta_training_from_random_improves():
    torch.set_num_threads(1)
    split = templated_split(60, seed=2)
    config = tiny(episodes=60, checkpoints=(0, 60), train_way=10, test_episodes=40, settings=((10, 1),))
    curve = co.meta_train(None, config, split.subset(slice(0, 40)), split.subset(slice(40, 60)), 0)
    assert curve[60]["10w1s"] > curve[0]["10w1s"] + 5


def test_run_keys_and_paired_gains(fake_root, fake_cache):
    torch.set_num_threads(1)
    config = tiny(background_characters=12)
    metrics = co.run(config, fake_root, strict=False)
    for start in co.STARTS:
        for e in config.checkpoints:
            seeds = [metrics[f"combine/{start}/5w1s/ep{e}/seed{s}"] for s in (0, 1)]
            assert metrics[f"combine/{start}/5w1s/ep{e}/acc"] == pytest.approx(sum(seeds) / 2)
            assert 0 <= min(seeds) and max(seeds) <= 100 and f"combine/{start}/5w1s/ep{e}/ci95" in metrics
        diff = [metrics[f"combine/{start}/5w1s/ep4/seed{s}"] - metrics[f"combine/random/5w1s/ep4/seed{s}"]
                for s in (0, 1)]
        assert metrics[f"combine/{start}/5w1s/gain"] == pytest.approx(sum(diff) / 2)
        assert metrics[f"combine/{start}/seconds"] > 0
    assert metrics["combine/random/5w1s/gain"] == 0 and metrics["combine/random/pretrain_seconds"] < 0.01
    # every start is evaluated on the same episodes: at episode 0 the random start is its own seed's init
    assert metrics["combine/inductive/pretrain_seconds"] > 0


def test_one_seed_gives_no_interval(fake_root, fake_cache):
    torch.set_num_threads(1)
    metrics = co.run(tiny(background_characters=8, seeds=(0,), starts=("random",)), fake_root, strict=False)
    assert "combine/random/5w1s/ep4/acc" in metrics
    assert not any(k.endswith("ci95") for k in metrics)


@pytest.mark.parametrize("overrides, match", [
    (dict(starts=("random", "imagenet")), "starts"), (dict(starts=()), "starts"), (dict(seeds=()), "seeds"),
    (dict(pretrain_drawers=20), "pretrain_drawers"), (dict(checkpoints=(0, 2)), "checkpoints"),
    (dict(checkpoints=(2, 0, 4)), "checkpoints")])
def test_bad_config(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


@pytest.mark.parametrize("kw, match", [(dict(epochs=0), "epochs"), (dict(drawers=21), "drawers"),
                                       (dict(batch=1.5), "batch")])
def test_bad_pretraining_arguments(kw, match):
    split = templated_split(4)
    args = {"epochs": 1, **kw}
    with pytest.raises(ValueError, match=match):
        co.pretrain_multitask(split, args.pop("epochs"), **args)
    with pytest.raises(ValueError, match="split"):
        co.pretrain_multitask(torch.zeros(3), 1)


def test_reproduce_combine_writes_one_record(smoke_record):
    record = smoke_record("combine", co)
    assert record["mode"] == "smoke" and record["config"]["episodes"] == 6
    assert {"combine/random/5w1s/ep6/acc", "combine/multitask/5w1s/gain"} <= set(record["metrics"])
