"""The MAML family on the image path (mapping.experiments.omniglot_maml): exact meta-gradients of Conv-4 under each
batch-norm policy, transductive and per-query evaluation, the widened head for Lake's runs, the reproduce target."""
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
    loss, _ = wrapper.meta_loss(batch, F.cross_entropy)
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
    forward = MAML(model)._forward
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
    with pytest.raises(ValueError, match="meta_batch must be a positive int"):
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
        assert metrics[f"{method}/5w1s/ci95"] > 0 and 0 <= metrics[f"{method}/5w1s/lake20/error"] <= 100
        assert metrics[f"{method}/5w1s/iterations"] == 3
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
