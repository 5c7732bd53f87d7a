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
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        MAML(sinusoid_mlp(), steps=steps)
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
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
        Reptile(sinusoid_mlp(), steps=2).meta_grad(bad, F.mse_loss)


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
