"""Bad input gets a clear error naming the argument and the expected form."""
import math

import pytest
import torch
import torch.nn.functional as F

from mapping.data import Sinusoid, TaskBatch
from mapping.meta import ANIL, MAML, Reptile, functional, maml_loss, params_of
from mapping.nn import MLP, sinusoid_mlp


def batch(tasks=3, k=4, q=5):
    return Sinusoid().sample(tasks, k, q, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("field, value, match", [
    ("query_x", torch.zeros(3, 5, 2), "query_x has per-example shape"),
    ("support_y", torch.zeros(3, 3, 1), "support_y has 3 shots"),
    ("query_y", torch.zeros(2, 5, 1), "query_y has 2 tasks"),
    ("support_x", torch.zeros(4), "support_x must have shape"),
    ("query_y", [[1.0]], "query_y must be a torch.Tensor"),
])
def test_support_query_shape_mismatch(field, value, match):
    b = batch()
    kwargs = dict(support_x=b.support_x, support_y=b.support_y, query_x=b.query_x, query_y=b.query_y)
    kwargs[field] = value
    with pytest.raises(ValueError, match=match):
        TaskBatch(**kwargs)


@pytest.mark.parametrize("steps", [-1, 1.5, True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        MAML(sinusoid_mlp(), steps=steps)
    with pytest.raises(ValueError, match="steps must be an int >= 0"):
        maml_loss(functional(MLP((1, 4, 1))), F.mse_loss, params_of(MLP((1, 4, 1))), batch(), steps=steps)


@pytest.mark.parametrize("alpha", [0.0, -0.1, math.nan, math.inf, "0.1"])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive finite float"):
        MAML(sinusoid_mlp(), alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be a positive finite float"):
        Reptile(sinusoid_mlp(), alpha=alpha)


def test_params_that_do_not_fit_the_model():
    model = MLP((1, 4, 1))
    params = params_of(model)
    with pytest.raises(ValueError, match=r"params does not fit the model: missing \['head.bias'\]"):
        maml_loss(functional(model), F.mse_loss, {k: v for k, v in params.items() if k != "head.bias"}, batch())
    wrong = {**params, "head.weight": torch.zeros(2, 4)}
    with pytest.raises(ValueError, match=r"params\['head.weight'\] has shape \(2, 4\), the model expects \(1, 4\)"):
        maml_loss(functional(model), F.mse_loss, wrong, batch())
    with pytest.raises(ValueError, match="unexpected"):
        functional(model)({**params, "extra": torch.zeros(1)}, torch.zeros(2, 1))


def test_unknown_head_names():
    with pytest.raises(ValueError, match="adapt names parameters the module does not have"):
        ANIL(sinusoid_mlp(), head=["head.nope"])


def test_non_finite_inner_loss_names_step_and_task():
    b = batch(tasks=4)
    poisoned = b.support_y.clone()
    poisoned[2, 0, 0] = math.nan
    bad = TaskBatch(b.support_x, poisoned, b.query_x, b.query_y)
    with pytest.raises(FloatingPointError, match="support_y holds a non-finite value .* in task 2"):
        MAML(sinusoid_mlp(), steps=2).meta_loss(bad, F.mse_loss)
    with pytest.raises(FloatingPointError, match="support_y holds a non-finite value .* in task 2"):
        Reptile(sinusoid_mlp(), steps=2).meta_loss(bad, F.mse_loss)


def test_diverging_inner_loop_names_the_first_bad_step():
    torch.manual_seed(0)
    b = batch(tasks=2)
    with pytest.raises(FloatingPointError, match=r"at inner step \d+ of task \d"):
        MAML(sinusoid_mlp(), alpha=1e3, steps=30).meta_loss(b, F.mse_loss)


def test_learner_adapt_rejects_non_finite_and_non_scalar_loss():
    learner = MAML(sinusoid_mlp()).clone()
    with pytest.raises(FloatingPointError, match="inner step 1"):
        learner.adapt(torch.tensor(math.inf, requires_grad=True))
    with pytest.raises(ValueError, match="loss must be a scalar"):
        learner.adapt(torch.ones(3, requires_grad=True))


@pytest.mark.parametrize("kwargs, match", [
    (dict(tasks=0, k_shot=5, q_query=5), "tasks must be an int >= 1"),
    (dict(tasks=2, k_shot=0, q_query=5), "k_shot must be an int >= 1"),
    (dict(tasks=2, k_shot=5, q_query=0), "q_query must be an int >= 1"),
])
def test_bad_sinusoid_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sinusoid().sample(**kwargs)


def test_bad_ranges_and_sizes():
    with pytest.raises(ValueError, match="amplitude must be a finite"):
        Sinusoid(amplitude=(5.0, 0.1))
    with pytest.raises(ValueError, match="sizes must be at least two positive ints"):
        MLP((1,))
    with pytest.raises(ValueError, match="batch must be a mapping.data.TaskBatch"):
        MAML(sinusoid_mlp()).meta_loss((1, 2, 3, 4), F.mse_loss)


# ------------------------------------------------ issue 7, item 5: every slip a new user makes, named


def classification_batch(tasks=2, n_way=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n_way).repeat(tasks, 1)  # (tasks, n_way)
    return TaskBatch(torch.randn(tasks, n_way, 4, generator=g, dtype=dtype), y,
                     torch.randn(tasks, n_way, 4, generator=g, dtype=dtype), y)


def classifier():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


@pytest.mark.parametrize("cut, match", [
    (lambda t: t[:0], "support_x holds 0 tasks"),
    (lambda t: t[:, :0], "holds 0 examples per task"),
])
def test_empty_task_batches_are_refused(cut, match):
    b = batch()
    with pytest.raises(ValueError, match=match):
        TaskBatch(*(cut(t) for t in b.tensors()))
    with pytest.raises(ValueError, match="query_x holds 0 examples per task"):
        TaskBatch(b.support_x, b.support_y, b.query_x[:, :0], b.query_y[:, :0])


@pytest.mark.parametrize("execution", ["vmap", "chunk", "loop"])
def test_dtype_and_device_mismatches_name_the_tensor(execution):
    model = classifier()
    with pytest.raises(ValueError, match=r"support_x has dtype torch.float64 but the parameters have torch.float32"):
        MAML(model, execution=execution).meta_loss(classification_batch(dtype=torch.float64), F.cross_entropy)
    with pytest.raises(ValueError, match=r"support_x is on cpu but the parameters are on meta.*batch.to\('meta'\)"):
        MAML(classifier().to("meta"), execution=execution).meta_loss(classification_batch(), F.cross_entropy)


def test_integer_inputs_to_a_float_model_are_refused_but_token_ids_for_an_embedding_are_not():
    b = classification_batch()
    images = TaskBatch((b.support_x * 100).long(), b.support_y, (b.query_x * 100).long(), b.query_y)
    with pytest.raises(ValueError, match=r"support_x holds integers \(torch.int64\) but the model computes in "
                                         r"torch.float32; convert the inputs with support_x.to\(torch.float32\)"):
        MAML(classifier()).meta_loss(images, F.cross_entropy)
    tokens = TaskBatch(images.support_x.abs() % 10, b.support_y, images.query_x.abs() % 10, b.query_y)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 3), torch.nn.Flatten(-2), torch.nn.Linear(12, 3))
    loss = MAML(model).meta_loss(tokens, F.cross_entropy)
    assert torch.isfinite(loss)


def test_float_labels_for_a_classification_loss_are_refused():
    b = classification_batch()
    floats = TaskBatch(b.support_x, b.support_y.float(), b.query_x, b.query_y.float())
    with pytest.raises(ValueError, match=r"support_y holds floats \(torch.float32\) of per-task shape \(3,\) against "
                                         r"scores of shape \(3, 3\): class labels must be int64 class indices"):
        MAML(classifier()).meta_loss(floats, F.cross_entropy)
    soft = TaskBatch(b.support_x, F.one_hot(b.support_y, 3).float(), b.query_x, F.one_hot(b.query_y, 3).float())
    assert torch.isfinite(MAML(classifier()).meta_loss(soft, F.cross_entropy))  # probabilities: same shape


def test_targets_without_the_trailing_dimension_do_not_broadcast_into_a_wrong_loss():
    b = batch()
    flat = TaskBatch(b.support_x, b.support_y[..., 0], b.query_x, b.query_y[..., 0])  # (tasks, shots)
    with pytest.raises(ValueError, match=r"support_y has per-task shape \(4,\) but the model outputs \(4, 1\).*"
                                         r"support_y\[\.\.\., None\]"):
        MAML(sinusoid_mlp()).meta_loss(flat, F.mse_loss)
    with pytest.raises(ValueError, match=r"query_y has per-task shape \(5,\)"):
        MAML(sinusoid_mlp(), steps=0).meta_loss(flat, F.mse_loss)
    with pytest.raises(ValueError, match="support_y has per-task shape"):
        Reptile(sinusoid_mlp()).meta_loss(flat, F.mse_loss)


@pytest.mark.parametrize("field", ["query_x", "query_y"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_query_values_are_named_before_anything_runs(field, value):
    b = batch(tasks=4)
    poisoned = {name: t.clone() for name, t in zip(("support_x", "support_y", "query_x", "query_y"), b.tensors())}
    poisoned[field][3, 1, 0] = value
    model = sinusoid_mlp()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match=rf"{field} holds a non-finite value \(nan or inf\) in task 3"):
        MAML(model).meta_loss(TaskBatch(**poisoned), F.mse_loss)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_a_loss_without_reduction_is_refused():
    def per_example(output, target):
        return F.mse_loss(output, target, reduction="none")
    with pytest.raises(ValueError, match=r"loss_fn must return one scalar per task .* got \(4, 1\); use "
                                         r"reduction='mean' \(not 'none'\)"):
        MAML(sinusoid_mlp()).meta_loss(batch(), per_example)
    learner = MAML(sinusoid_mlp()).clone()
    b = batch()
    with pytest.raises(ValueError, match="loss must be a scalar"):
        learner.adapt(per_example(learner(b.support_x[0]), b.support_y[0]))


def test_one_task_without_its_tasks_dimension_gets_the_fix_in_the_message():
    b = batch(tasks=1)
    sx, sy, qx, qy = (t[0] for t in b.tensors())  # (shots, 1): one task, tasks dimension dropped
    with pytest.raises(ValueError, match=r"support_x has shape \(4, 1\).*For one task of 4 examples add the tasks "
                                         r"dimension \(support_x\[None\], shape \(1, 4, 1\)\)"):
        TaskBatch(sx, sy, qx, qy)
    images = classification_batch(tasks=1)
    with pytest.raises(ValueError, match=r"support_y must have shape \(tasks, shots, \.\.\.\), got shape \(3,\); "
                                         r"for one task, add the tasks dimension: support_y\[None\]"):
        TaskBatch(images.support_x[0], images.support_y[0], images.query_x[0], images.query_y[0])
