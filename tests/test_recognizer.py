"""Chapter 5's one-shot recognizer: preprocessing as the training data's, ProtoNet's equations, save and load,
Lake's runs through the user's calls, the invented glyphs, learning, bad input."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from mapping.data import GLYPHS, LakeRuns, glyph_drawings
from mapping.data.glyphs import draw_glyph
from mapping.data.omniglot import preprocess_png
from mapping.experiments import recognizer as rz
from mapping.meta import PrototypicalNetwork
from mapping.nn import Conv4
from omniglot_fixtures import requires_real


def fresh(hidden: int = 8, seed: int = 0) -> rz.Recognizer:
    torch.manual_seed(seed)
    backbone = Conv4(hidden=hidden, bn="running")
    for module in backbone.modules():  # non-trivial running statistics, so evaluation mode matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return rz.Recognizer(backbone)


def drawn(seed: int = 0, per_glyph: int = 3) -> dict:
    return glyph_drawings(per_glyph=per_glyph, generator=torch.Generator().manual_seed(seed))


def test_prepare_matches_the_preprocessing_of_the_training_pngs():
    image = draw_glyph(GLYPHS["fork"], torch.Generator().manual_seed(3))  # 105 x 105, like an Omniglot PNG
    png = io.BytesIO()
    image.save(png, format="PNG")
    expected = torch.from_numpy(preprocess_png(png.getvalue()).astype(np.float32) / 255.0)  # (28, 28) ink = 1
    torch.testing.assert_close(rz.prepare(image)[0], expected, atol=1 / 255 + 1e-6, rtol=0)


def test_prepare_reads_paths_arrays_tensors_and_transparent_pngs_alike(tmp_path):
    image = draw_glyph(GLYPHS["eye"], torch.Generator().manual_seed(0))
    expected = rz.prepare(image)  # (1, 28, 28)
    assert expected.shape == (1, 28, 28) and expected.min() >= 0 and expected.max() <= 1 and expected.max() > 0.5
    image.save(tmp_path / "eye.png")
    grey = np.array(image)  # (105, 105) uint8, white = 255
    rgba = Image.new("RGBA", image.size, (0, 0, 0, 0))  # ink on transparent paper
    rgba.putalpha(Image.fromarray(255 - grey))
    for same in (tmp_path / "eye.png", str(tmp_path / "eye.png"), grey, grey / 255.0, torch.from_numpy(grey),
                 image.convert("RGB"), rgba):
        torch.testing.assert_close(rz.prepare(same), expected, atol=2 / 255, rtol=0)
    assert rz.prepare(np.full((50, 70), 255, np.uint8)).abs().max() == 0  # blank paper is all zeros


def test_prepare_pads_to_a_square_and_keeps_the_aspect_ratio():
    wide = Image.new("L", (210, 105), 255)
    wide.paste(0, (0, 50, 210, 55))  # a horizontal bar across the whole width, mid-height
    x = rz.prepare(wide)[0]  # (28, 28)
    rows = x.sum(1)  # (28,)
    assert rows.argmax().item() in (13, 14) and rows[:10].sum() == 0 and rows[-10:].sum() == 0
    assert x[14, 0] > 0.3 and x[14, -1] > 0.3  # the bar spans the square's full width


@pytest.mark.parametrize("bad, error, words", [
    ("missing.png", FileNotFoundError, "missing.png"),
    (np.zeros((2, 3, 3), np.uint8), ValueError, "2-D"),
    (np.full((5, 5), 2.0), ValueError, "[0, 1]"),
    (np.full((5, 5), np.nan), ValueError, "[0, 1]"),
    (np.zeros((5, 5), np.int64), ValueError, "uint8"),
    (42, TypeError, "file path"),
])
def test_prepare_rejects_what_is_not_a_drawing(bad, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        rz.prepare(bad)


def test_predictions_are_prototypical_networks_equations_1_and_2():
    recognizer, d = fresh(), drawn(per_glyph=4)
    names = list(d)
    support = torch.stack([rz.prepare(x) for n in names for x in d[n][:2]])  # (2 * ways, 1, 28, 28)
    support_y = torch.arange(len(names)).repeat_interleave(2)  # (2 * ways,)
    query = torch.stack([rz.prepare(x) for n in names for x in d[n][2:]])  # (2 * ways, 1, 28, 28)
    recognizer.remember({n: d[n][:2] for n in names})
    protonet = PrototypicalNetwork(recognizer.backbone).eval()
    with torch.no_grad():
        logits = protonet(support[None], support_y[None], query[None], len(names))[0]  # (q, ways)
    torch.testing.assert_close(recognizer.scores(query), logits)
    assert recognizer.predict([x for n in names for x in d[n][2:]]) == [names[i] for i in logits.argmax(1)]


def test_a_prototype_is_the_mean_embedding_and_remembering_a_name_again_replaces_it():
    recognizer, d = fresh(), drawn(per_glyph=3)
    recognizer.remember({"hook": d["hook"], "fork": d["fork"][0]})
    z = recognizer.embed(d["hook"])  # (3, d)
    torch.testing.assert_close(recognizer.protos[0], z.mean(0))
    torch.testing.assert_close(recognizer.protos[1], recognizer.embed([d["fork"][0]])[0])
    recognizer.remember({"hook": d["hook"][2]})
    assert recognizer.names == ["hook", "fork"]
    torch.testing.assert_close(recognizer.protos[0], z[2])
    assert recognizer.forget().names == [] and recognizer.protos.numel() == 0


def test_save_and_load_give_the_same_recognizer(tmp_path):
    recognizer, d = fresh(), drawn()
    recognizer.remember({n: v[0] for n, v in d.items()})
    path = recognizer.save(tmp_path / "sub" / "recognizer.pt")
    loaded = rz.Recognizer.load(path)
    queries = [v[1] for v in d.values()]
    assert loaded.names == recognizer.names
    torch.testing.assert_close(loaded.scores(queries), recognizer.scores(queries))
    assert not list(tmp_path.glob("sub/.*tmp"))  # written atomically: no temporary file left
    torch.save({"format": 99}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a recognizer"):
        rz.Recognizer.load(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="Conv4"):
        rz.Recognizer(torch.nn.Sequential(torch.nn.Flatten())).save(tmp_path / "x.pt")


def test_bad_calls_say_what_is_expected():
    recognizer, d = fresh(), drawn()
    with pytest.raises(ValueError, match="remember"):
        recognizer.predict([d["hook"][0]])
    with pytest.raises(ValueError, match="non-empty mapping"):
        recognizer.remember({})
    recognizer.remember({"hook": d["hook"][0]})
    with pytest.raises(ValueError, match="one drawing"):
        recognizer.predict(d["fork"][0])
    with pytest.raises(ValueError, match=r"\(n, 1, 28, 28\)"):
        recognizer.predict(torch.zeros(2, 1, 20, 20))
    with pytest.raises(ValueError, match="at least one"):
        recognizer.predict([])


@pytest.mark.parametrize("field, value", [("episodes", -1), ("train_way", 0), ("glyph_episodes", 1),
                                          ("hidden", 2.5), ("glyph_queries", True)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        rz.RecognizerConfig(**{field: value})


def test_lake_error_through_remember_and_predict_is_one_shot_nearest_neighbour():
    recognizer = fresh()
    g = torch.Generator().manual_seed(0)
    training, test = torch.rand(3, 6, 28, 28, generator=g), torch.rand(3, 6, 28, 28, generator=g)
    runs = LakeRuns(training, test, torch.stack([torch.randperm(6, generator=g) for _ in range(3)]))
    result = rz.lake_error(recognizer, runs)
    for r in range(3):
        z_support = recognizer.embed(training[r].unsqueeze(1))  # (6, d)
        z_query = recognizer.embed(test[r].unsqueeze(1))  # (6, d)
        assert result.predictions[r].tolist() == torch.cdist(z_query, z_support).argmin(1).tolist()
    wrong = (result.predictions != runs.labels).double().mean().item() * 100
    assert result.error == pytest.approx(wrong) and recognizer.names == []


def test_glyph_drawings_are_seeded_and_vary_like_handwriting():
    a, b, c = drawn(seed=1), drawn(seed=1), drawn(seed=2)
    assert list(a) == list(GLYPHS) and all(len(v) == 3 for v in a.values())
    for name in GLYPHS:
        first = np.asarray(a[name][0])
        assert first.shape == (105, 105) and first.min() == 0 and first.max() == 255
        assert np.array_equal(first, np.asarray(b[name][0]))  # same seed, same drawing
        assert not np.array_equal(first, np.asarray(a[name][1]))  # two drawings of one glyph differ
        assert not np.array_equal(first, np.asarray(c[name][0]))
    with pytest.raises(ValueError, match="glyph names"):
        glyph_drawings(["hook", "nope"])
    with pytest.raises(ValueError, match="per_glyph"):
        glyph_drawings(per_glyph=0)
    with pytest.raises(ValueError, match="at least 2"):
        draw_glyph([[(0.1, 0.1)]])


@requires_real
def test_training_lowers_lakes_error():
    from mapping.experiments.omniglot_metric import build, fit, load_split
    config = rz.RecognizerConfig.for_mode("smoke", episodes=60)
    torch.manual_seed(config.seed)
    untrained = rz.lake_error(rz.Recognizer(build(config.metric()).backbone)).error
    trained = rz.lake_error(rz.Recognizer(fit(config.metric(), load_split("background"), progress=False)[0]
                                          .backbone)).error
    assert trained < untrained - 8, (untrained, trained)


def test_reproduce_recognizer_writes_its_record_and_a_model_that_loads(tmp_path, monkeypatch, fake_root,
                                                                     fake_cache):
    import json

    import omniglot_fixtures as fx
    from mapping import reproduce
    fx.make_runs_zip(fake_root / "all_runs.zip", runs=2, ways=5)
    real_run = rz.run
    monkeypatch.setattr(rz, "run", lambda config, **kw: real_run(config, fake_root, False, False, **kw))
    assert reproduce.main(["recognizer", "--mode", "smoke", "--out", str(tmp_path), "--model",
                           str(tmp_path / "r.pt")]) == 0
    record = json.loads((tmp_path / "recognizer.json").read_text())
    assert record["model"] == str(tmp_path / "r.pt") and record["config"]["episodes"] == 30
    assert {"recognizer/lake20/error", "recognizer/glyphs/acc", "recognizer/train_seconds"} <= set(record["metrics"])
    assert rz.Recognizer.load(tmp_path / "r.pt").names == []
    with pytest.raises(SystemExit):
        reproduce.main(["sinusoid", "--model", str(tmp_path / "x.pt")])


def test_quick_and_smoke_train_chapter_2_1_s_background_protonet():
    """Chapter 5 says its recognizer trains exactly as 2.1's background ProtoNet: in every mode the book runs."""
    from dataclasses import asdict

    from mapping.experiments.omniglot_metric import TRAINING_FIELDS, MetricConfig
    for mode in ("smoke", "quick"):
        ours = rz.RecognizerConfig.for_mode(mode).metric()
        page = MetricConfig.for_mode("protonet", "background", mode=mode)
        assert {f: asdict(ours)[f] for f in TRAINING_FIELDS} == {f: asdict(page)[f] for f in TRAINING_FIELDS}
    full = rz.RecognizerConfig.for_mode("full")
    assert (full.episodes, full.train_way, full.halve_every) == (2000, 60, 700)  # results/recognizer.json's


def test_the_recognizer_reuses_the_network_another_page_trained(fake_root, fake_cache, monkeypatch):
    """One training per configuration and package code: the second caller (chapter 5 after chapter 2.1) reads
    the stored weights; another configuration, or MAPPING_MEMO=0, trains again."""
    from mapping.experiments import omniglot_metric as om
    calls = []
    real_fit = om.fit

    def counting_fit(config, *args, **kwargs):
        calls.append(config.episodes)
        return real_fit(config, *args, **kwargs)
    monkeypatch.setattr(om, "fit", counting_fit)
    config = rz.RecognizerConfig.for_mode("smoke", episodes=3, glyph_episodes=2)
    first, seconds = om.trained(config.metric(), progress=False, root=fake_root, strict=False)
    assert calls == [3] and seconds > 0
    page = om.MetricConfig.for_mode("protonet", "background", mode="smoke", episodes=3, test_episodes=7)
    again, again_seconds = om.trained(page, progress=False, root=fake_root, strict=False)  # test sizes: no matter
    assert calls == [3] and again_seconds == seconds
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    om.trained(om.MetricConfig.for_mode("protonet", "background", mode="smoke", episodes=4), progress=False,
               root=fake_root, strict=False)
    assert calls == [3, 4]
    monkeypatch.setenv("MAPPING_MEMO", "0")
    om.trained(page, progress=False, root=fake_root, strict=False)
    assert calls == [3, 4, 3]
