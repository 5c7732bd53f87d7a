"""The one definition of divergence and the statistics reported beside it (mapping.stats)."""
import math

import pytest
import torch

from mapping.stats import DIVERGENCE_FACTOR, diverged, mean_ci95, seed_summary, step_summary, t_ci95

NAN, INF = float("nan"), float("inf")


def test_a_task_diverges_when_its_loss_is_not_finite_or_ten_times_its_loss_before_fine_tuning():
    assert DIVERGENCE_FACTOR == 10
    losses = torch.tensor([[1.0, 0.5, 9.9],   # below 10x its start: kept
                           [2.0, 21.0, 1.0],  # above 10x at step 1 only
                           [1.0, NAN, INF],   # not finite
                           [INF, 1.0, 1.0]])  # no finite start: diverged everywhere
    expected = torch.tensor([[False, False, False], [False, True, False], [False, True, True], [True, True, True]])
    assert torch.equal(diverged(losses), expected)
    assert torch.equal(diverged(losses, factor=5)[0], torch.tensor([False, False, True]))


def test_step_summary_reports_the_share_and_the_quartiles_of_the_rest_and_a_mean_only_where_none_diverged():
    torch.manual_seed(0)
    losses = torch.rand(200, 3, dtype=torch.float64) + 1.0  # (tasks, steps + 1)
    losses[:3, 2] = 1e6  # three tasks explode at step 2
    rows = step_summary(losses)
    mean, ci = mean_ci95(losses[:, 1])
    assert rows[1]["diverged"] == 0 and rows[1]["mean"] == pytest.approx(mean.item())
    assert rows[1]["ci95"] == pytest.approx(ci.item())
    assert rows[2]["diverged"] == pytest.approx(3 / 200) and "mean" not in rows[2] and "ci95" not in rows[2]
    rest = losses[3:, 2]
    assert rows[2]["median"] == pytest.approx(rest.median().item(), abs=1e-2)  # quantile interpolates
    assert rows[2]["q25"] < rows[2]["median"] < rows[2]["q75"] < 2.0  # the explosions leave no trace
    everything_diverged = step_summary(torch.tensor([[1.0, NAN], [1.0, 50.0]]))
    assert everything_diverged[1] == {"diverged": 1.0}


@pytest.mark.parametrize("losses, match", [(torch.ones(3), "shape \\(tasks, steps \\+ 1\\)"),
                                           (torch.ones(3, 0), "shape \\(tasks, steps \\+ 1\\)")])
def test_bad_losses_are_named(losses, match):
    with pytest.raises(ValueError, match=match):
        diverged(losses)


@pytest.mark.parametrize("factor", [1, 0.5, True, "10", math.nan])
def test_bad_factor_is_named(factor):
    with pytest.raises(ValueError, match="factor must be a number above 1"):
        diverged(torch.ones(2, 2), factor)


def test_t_interval_matches_the_student_quantile():
    mean, half = t_ci95(torch.tensor([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / 3 ** 0.5, rel=1e-6)
    assert math.isnan(t_ci95(torch.tensor([4.0]))[1])


def test_seed_summary_keeps_the_mean_the_interval_and_every_seed():
    out = seed_summary({"m/acc": [1.0, 2.0, 3.0], "one/acc": [5.0, 6.0, 7.0]}, (0, 1, 2))
    assert out["m/acc"] == 2.0 and out["m/ci95"] == pytest.approx(t_ci95(torch.tensor([1.0, 2.0, 3.0]))[1])
    assert [out[f"m/seed{s}"] for s in (0, 1, 2)] == [1.0, 2.0, 3.0] and out["one/seed2"] == 7.0
    single = seed_summary({"x": [4.0]}, (3,), prefix=lambda key: key + "/p")
    assert single == {"x": 4.0, "x/p/seed3": 4.0}  # no interval from one seed


def test_accuracy_is_a_fraction_of_argmax_hits_and_names_bad_shapes():
    from mapping.stats import accuracy
    scores = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [1.0, 0.5]])  # argmax 1, 0, 1, 0
    assert accuracy(scores, torch.tensor([1, 0, 0, 0])) == 0.75
    assert accuracy(scores[None], torch.tensor([[1, 1, 1, 0]])) == 0.75  # leading dims: tasks
    assert math.isnan(accuracy(scores[:0], torch.tensor([], dtype=torch.long)))
    with pytest.raises(ValueError, match="same leading shape"):
        accuracy(scores, torch.tensor([1, 0]))
