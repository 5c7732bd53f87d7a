"""The MAML family on the image path (mapping.experiments.omniglot_maml): exact meta-gradients of Conv-4 under each
batch-norm policy, transductive and per-query evaluation, the widened head for Lake's runs, the reproduce target."""
import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mapping.data import TaskBatch
from mapping.experiments import omniglot_maml as om
from mapping.meta import ANIL, FOMAML, MAML, MetaSGD
from mapping.nn import Conv4
from mapping import results
from mapping.reproduce import main as reproduce
from reference import reference_meta_loss, relative_error

DATA = Path(os.environ.get("MAPPING_DATA", "/nonexistent")) / "omniglot"
needs_data = pytest.mark.skipif(not (DATA / "images_background.zip").is_file(),
                                reason="set MAPPING_DATA to a folder with omniglot/images_background.zip")

METHODS = {"maml": MAML, "fomaml": FOMAML, "metasgd": MetaSGD, "anil": ANIL}


def image_tasks(tasks=3, n_way=3, shots=2, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(tasks, 2 * n_way * shots, 1, size, size, generator=g, dtype=torch.float64)  # (tasks, 2NK, 1, s, s)
    y = torch.arange(n_way).repeat_interleave(shots).repeat(tasks, 2)  # (tasks, 2NK)
    half = n_way * shots
    return TaskBatch(x[:, :half], y[:, :half], x[:, half:], y[:, half:])


def conv4(bn, n_way=3, size=12, seed=0):
    torch.manual_seed(seed)
    model = Conv4(n_way, hidden=4, bn=bn, strided=True, image_size=size).double()
    with torch.no_grad():  # norm affine parameters away from 1 / 0, so that every term of the gradient matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    if bn == "running":  # stored statistics far from any batch's, used in eval mode
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.eval()
    return model


@pytest.mark.parametrize("execution", ["vmap", "chunk"])
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("bn", ["batch", "running", "none"])
def test_conv4_meta_gradient_matches_a_per_task_loop_in_float64(bn, method, execution):
    """Two inner steps through the strided Conv-4 (per-call batch statistics, stored statistics in eval mode, or
    none) against tests/reference.py's plain autograd loop: relative error at most 1e-10."""
    model, batch = conv4(bn), image_tasks()
    wrapper = METHODS[method](model, alpha=0.3, steps=2, execution=execution, chunk_size=2)
    loss = wrapper.meta_loss(batch, F.cross_entropy)
    got = torch.autograd.grad(loss, list(wrapper.parameters()))
    ref = reference_meta_loss(model, batch, F.cross_entropy, steps=2, alpha=wrapper.alpha,
                              first_order=method == "fomaml", adapt=wrapper.adapt_names)
    want = torch.autograd.grad(ref, list(wrapper.parameters()))
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    assert relative_error(got, want) <= 1e-10


def test_batch_policy_makes_the_transductive_evaluation_depend_on_other_queries():
    """Under ``bn="batch"`` a query's transductive prediction changes when another query changes; the per-query
    evaluation (support + that query alone) does not, and equals an explicit loop over queries."""
    model = conv4("batch")
    forward = MAML(model).functional_call
    params = {k: v.detach() for k, v in model.named_parameters()}
    batch = image_tasks(tasks=1)
    sx, qx = batch.support_x[0], batch.query_x[0]  # (6, 1, 12, 12) each
    other = qx.clone()
    other[1:] = torch.rand_like(other[1:])  # every query but the first replaced
    for evaluation, changes in (("transductive", True), ("per_query", False)):
        a = om.predict(forward, params, sx, qx, evaluation)[0]
        b = om.predict(forward, params, sx, other, evaluation)[0]
        assert (not torch.allclose(a, b)) == changes, evaluation
    loop = torch.stack([model(torch.cat([sx, q[None]]))[-1] for q in qx])  # (6, 3)
    torch.testing.assert_close(om.predict(forward, params, sx, qx, "per_query"), loop)
    with pytest.raises(ValueError, match="evaluation must be one of"):
        om.predict(forward, params, sx, qx, "inductive")


def test_classify_batch_adapts_each_task_as_the_inner_loop_does():
    """After three steps on the support set the predictions are those of the explicitly adapted model, and the
    support images themselves, a sixth right before adapting, are all classified right after 20 steps."""
    model = conv4("batch").float()
    learner = MAML(model, alpha=0.5, steps=1)
    batch = image_tasks(tasks=2).to("cpu", torch.float32)
    predicted = om.classify_batch(learner, batch, steps=3, evaluations="transductive")  # (2, 6)
    for t in range(2):
        one = learner.clone()
        for _ in range(3):
            one.adapt(F.cross_entropy(one(batch.support_x[t]), batch.support_y[t]))
        assert torch.equal(predicted[t], one(batch.query_x[t]).argmax(-1))
    fitted = TaskBatch(batch.support_x, batch.support_y, batch.support_x, batch.support_y)
    before = om.accuracy(learner, fitted, steps=0, evaluations=("transductive",))["transductive"]  # (2,)
    after = om.accuracy(learner, fitted, steps=20, evaluations=("transductive",))["transductive"]  # (2,)
    assert before.min() < 0.5 and after.min() == 1.0
    with pytest.raises(ValueError, match="evaluations must come from"):
        om.classify_batch(learner, batch, 1, ("both",))


@pytest.mark.parametrize("method", ["maml", "anil", "metasgd"])
def test_widen_head_keeps_the_body_and_starts_every_class_equal(method):
    config = om.MamlConfig(method=method, hidden=8)
    learner = om.build(config)
    wide = om.widen_head(learner, 20)
    assert type(wide) is type(learner) and wide.module.head.out_features == 20
    for k, v in learner.module.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, wide.module.state_dict()[k])
    logits = wide(torch.rand(4, 1, 28, 28))  # (4, 20)
    torch.testing.assert_close(logits, logits[:, :1].expand(-1, 20))
    if method == "metasgd":
        rates = dict(zip(wide.rate_names, wide.rates))
        assert rates["head.weight"].shape == (20, 8)


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="method must be one of"):
        om.MamlConfig(method="protonet")
    with pytest.raises(ValueError, match="meta_batch must be an int >= 1"):
        om.MamlConfig(meta_batch=0)
    paper = om.MamlConfig.paper("maml", 20, 5)
    assert (paper.alpha, paper.steps, paper.meta_batch, paper.query, paper.iterations) == (0.1, 5, 16, 5, 60_000)


@needs_data
@pytest.mark.slow
def test_reproduce_omniglot_maml_smoke(tmp_path, monkeypatch):
    """``python -m mapping.reproduce omniglot-maml --mode smoke`` on the real split: every metric of the three
    CPU methods, with provenance, and ``--iterations`` / ``--setting`` checked."""
    monkeypatch.setenv("MAPPING_CACHE", os.environ.get("MAPPING_CACHE", str(tmp_path / "cache")))
    assert reproduce(["omniglot-maml", "--mode", "smoke", "--out", str(tmp_path), "--no-resume", "--iterations",
                      "3"]) == 0
    record = json.loads((tmp_path / "omniglot_maml.json").read_text())
    for field in results.PROVENANCE_FIELDS:
        assert field in record
    metrics = record["metrics"]
    for method in ("maml", "fomaml", "anil"):
        for key in ("acc", "per_query/acc"):
            assert 0 <= metrics[f"{method}/5w1s/{key}"] <= 100
        assert metrics[f"{method}/5w1s/ci95"] > 0 and 0 <= metrics[f"{method}/5w1s/lake/error"] <= 100
        assert metrics[f"{method}/5w1s/lake/runs"] == 12  # the 1200-character split trains on 8 of Lake's runs
        assert metrics[f"{method}/5w1s/iterations"] == 3 and metrics[f"{method}/5w1s/train_seconds"] > 0
        assert 0 <= metrics[f"{method}/5w1s/q5/acc"] <= 100 and 0 <= metrics[f"{method}/5w1s/q5/per_query/acc"] <= 100
    assert [r["method"] for r in record["config"]["runs"]] == ["maml", "fomaml", "anil"]
    with pytest.raises(SystemExit):
        reproduce(["omniglot-metric", "--iterations", "3", "--out", str(tmp_path)])


@needs_data
@pytest.mark.slow
def test_reproduce_omniglot_mann_smoke(tmp_path, monkeypatch):
    """``python -m mapping.reproduce omniglot-mann --mode smoke``: accuracy by instance for both models on the
    held-out characters, the training curves, and 20x20 images."""
    monkeypatch.setenv("MAPPING_CACHE", os.environ.get("MAPPING_CACHE", str(tmp_path / "cache")))
    assert reproduce(["omniglot-mann", "--mode", "smoke", "--out", str(tmp_path), "--no-resume"]) == 0
    record = json.loads((tmp_path / "omniglot_mann.json").read_text())
    metrics = record["metrics"]
    for model in ("mann", "lstm"):
        for i in (1, 2, 3, 4, 5, 10):
            assert 0 <= metrics[f"{model}/acc/{i}"] <= 100
        assert len(record["curves"][model]) == record["config"]["iterations"]
    assert record["config"]["size"] == 20


@pytest.mark.parametrize("bn", ["batch", "none"])
def test_reptile_adam_inner_loop_is_the_same_vmapped_and_looped_on_conv4(bn):
    """Reptile's inner Adam through Conv-4 (per-call batch statistics routed to primitive ops under vmap) gives
    the same adapted weights and adaptation curve whether the tasks are vmapped or looped, in float64. With batch
    norm the convolution biases have an exact gradient of zero (the norm removes them); Adam divides their rounding
    noise (1e-17) by its own size plus eps, so those entries move by up to about 1e-9 differently in the two
    executions: hence an absolute tolerance of 1e-8 there, a millionth of a step of size 0.01."""
    from mapping.meta import Reptile
    model, batch = conv4(bn), image_tasks()
    runs = {e: Reptile(model, alpha=0.01, steps=3, inner="adam", execution=e, chunk_size=2) for e in ("chunk", "loop")}
    fast = {e: r.adapted(batch.support_x, batch.support_y, F.cross_entropy)[0] for e, r in runs.items()}
    for k in fast["loop"]:
        tol = 1e-8 if bn == "batch" and k.endswith("conv.bias") else 1e-12
        torch.testing.assert_close(fast["chunk"][k], fast["loop"][k], rtol=1e-10, atol=tol)
    curve = runs["chunk"].adaptation_curve(batch, F.cross_entropy, 3)  # (3, 4)
    before = torch.stack([F.cross_entropy(model(batch.query_x[t]), batch.query_y[t]) for t in range(3)])
    torch.testing.assert_close(curve[:, 0], before.detach())
    assert curve.shape == (3, 4)


def test_reptile_config_takes_nichols_settings():
    config = om.MamlConfig.for_mode("reptile", mode="full")
    assert (config.alpha, config.steps, config.test_steps, config.meta_lr, config.meta_batch) == (1e-3, 5, 50, 1.0, 5)
    assert isinstance(om.build(config), __import__("mapping").meta.Reptile) and om.build(config).inner == "adam"


@pytest.mark.parametrize("method", ["maml", "fomaml", "anil", "reptile"])
def test_quick_mode_shrinks_the_run_but_keeps_each_methods_step_sizes(method):
    """Chapter 2.1 (continued) says its live runs keep the paper's step sizes and steps on a smaller budget."""
    quick, full = (om.MamlConfig.for_mode(method, mode=m) for m in ("quick", "full"))
    same = ("alpha", "steps", "test_steps", "meta_lr", "n_way", "k_shot", "query", "test_query")
    assert [getattr(quick, f) for f in same] == [getattr(full, f) for f in same]
    assert quick.iterations < full.iterations and quick.hidden <= full.hidden
    assert quick.meta_batch <= full.meta_batch  # Reptile's 5 tasks are not grown to the others' 16


def test_protocols_name_each_scoring_of_a_run_and_its_keys():
    from mapping.experiments import families
    assert families.protocols({"test_query": 1, "wide_query": 5}) == [
        ("1 per class, transductive", (None,)), ("1 per class, one at a time", (None, "per_query")),
        ("5 per class, transductive", ("q5",)), ("5 per class, one at a time", ("q5", "per_query"))]
    assert families.protocols({"test_query": 5, "wide_query": 5}) == [
        ("5 per class, transductive", (None,)), ("5 per class, one at a time", (None, "per_query"))]
    assert [om.key("maml", "5w1s", *parts, "acc") for _, parts in families.protocols(
        {"test_query": 1, "wide_query": 5})] == ["maml/5w1s/acc", "maml/5w1s/per_query/acc", "maml/5w1s/q5/acc",
                                                 "maml/5w1s/q5/per_query/acc"]
    metrics = {"maml/5w1s/q5/acc": 71.25, "maml/5w1s/q5/ci95": 2.5}
    assert families.accuracy_cell(metrics, "maml/5w1s/q5/acc") == "71.2 ± 2.5"
    assert families.accuracy_cell({}, "maml/5w1s/acc") == "—"  # no record
    with pytest.raises(KeyError, match="maml/5w1s/acc"):
        families.accuracy_cell(metrics, "maml/5w1s/acc")


def test_side_by_side_reads_each_family_from_its_record_and_says_what_is_missing():
    from mapping.experiments import families
    metric = {"metrics": {"protonet/5w1s/acc": 98.2, "protonet/5w1s/ci95": 0.2, "protonet/train_seconds": 1200.0}}
    maml = {"config": {"runs": [dataclasses.asdict(om.MamlConfig(method="anil"))]},
            "metrics": {"anil/5w1s/acc": 90.0, "anil/5w1s/ci95": 1.0, "anil/5w1s/per_query/acc": 88.0,
                        "anil/5w1s/per_query/ci95": 1.5, "anil/5w1s/train_seconds": 3000.0}}
    headers, rows = families.side_by_side(metric, maml, None)
    table = {(r[0] or "same", r[1]): r for r in rows}
    assert table["metric-based", "Prototypical Networks"][2:5] == ["98.2 ± 0.2", "5-way 1-shot", "20"]
    assert table["optimization-based", "ANIL"][2] == "90.0 ± 1.0" and table["optimization-based", "ANIL"][4] == "50"
    assert "on the head" in table["optimization-based", "ANIL"][5]
    assert table["same", "ANIL, one query at a time"][2] == "88.0 ± 1.5"
    assert table["metric-based", "Matching Networks"][2] == "—"
    assert table["model-based", "(no stored omniglot_mann record)"][2] == "—"
    assert len(headers) == len(rows[0])


def test_unseen_runs_leave_out_every_run_with_a_trained_drawing():
    from mapping.data.lake import LakeRuns, unseen_runs
    g = torch.Generator().manual_seed(0)
    runs = LakeRuns(torch.rand(4, 3, 5, 5, generator=g), torch.rand(4, 3, 5, 5, generator=g),
                    torch.arange(3).repeat(4, 1))
    seen = torch.rand(10, 2, 5, 5, generator=g)  # (classes, drawings, H, W)
    seen[3, 1] = runs.training[1, 2]  # a support drawing of run 1 ...
    seen[7, 0] = runs.test[3, 0]  # ... and a test drawing of run 3 were trained on
    assert unseen_runs(runs, seen).tolist() == [True, False, True, False]
    kept = runs.subset(unseen_runs(runs, seen))
    assert kept.num_runs == 2 and torch.equal(kept.test[1], runs.test[2])
