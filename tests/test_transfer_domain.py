"""Domain adaptation: gradient reversal, DANN's schedules and loss, multi-kernel MMD, CORAL, the shift toys and DANN
on the inter-twinning moons (float64 for the numerics).

References are written here from the papers' formulas, independently of ``mapping.transfer``: double loops over
pairs for MMD (Gretton et al. 2012, Lemma 6), the covariance of Sun & Saenko's eq. (2) for CORAL, and the
discriminator's loss computed without reversal for the domain-adversarial gradient.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.data.moons import (SHIFT_KINDS, TEXTURE_HIGH, inter_twinning_moons, random_texture, rotation_matrix,
                                shift_colours, shifted_digits)
from mapping.data.multidigits import load_digits
from mapping.experiments.moons import decision_grid, run_moons
from mapping.transfer import (CORALLoss, DomainAdversarialLoss, DomainDiscriminator, GradientReversal,
                              GradientReversalLayer, MMDLoss, coral, dann_lambda, dann_lr, grad_reverse, mmd)

D = torch.float64


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- gradient reversal

@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 6.0])
def test_grl_is_the_identity_forward_and_minus_lambda_times_the_upstream_gradient_backward(lam):
    x = torch.randn(5, 4, generator=rng(), dtype=D, requires_grad=True)
    upstream = torch.randn(5, 4, generator=rng(1), dtype=D)
    for y in (grad_reverse(x, lam), GradientReversalLayer(lam)(x)):
        assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
        (g,) = torch.autograd.grad(y, x, upstream)
        assert torch.equal(g, -lam * upstream)
    w = torch.randn(4, 3, generator=rng(2), dtype=D, requires_grad=True)
    out = torch.tanh(grad_reverse(x, lam) @ w).sum()  # downstream parameters see the ordinary gradient
    gx, gw = torch.autograd.grad(out, (x, w))
    ref_x, ref_w = torch.autograd.grad(torch.tanh(x @ w).sum(), (x, w))
    assert torch.equal(gw, ref_w) and torch.allclose(gx, -lam * ref_x, rtol=1e-15, atol=0)


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_grl_passes_gradcheck_on_a_function_whose_true_derivative_is_the_reversed_one(lam):
    """``F(x) = g(R(x)) - (1 + lambda) g(x.detach())`` has the value ``-lambda g(x)``, so its true derivative is
    ``-lambda J_g``; autograd reaches ``x`` only through the reversal layer, so gradcheck passes iff ``R``'s backward
    is exactly ``-lambda`` times the upstream gradient."""
    w = torch.randn(3, 4, generator=rng(), dtype=D)

    def g(z):
        return torch.sin(z @ w) * z.sum(1, keepdim=True)  # (N, 4)

    def composed(x):
        return g(grad_reverse(x, lam)) - (1 + lam) * g(x.detach())  # (N, 4) = -lam g(x)

    x = torch.randn(5, 3, generator=rng(1), dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(composed, (x,))
    assert not torch.autograd.gradcheck(lambda z: g(grad_reverse(z, lam)), (x,), raise_exception=False)
    assert torch.autograd.gradcheck(lambda z: GradientReversal.apply(z, lam) - (1 + lam) * z.detach(), (x,))


def test_dann_lambda_and_learning_rate_schedules():
    assert dann_lambda(0) == 0.0 and dann_lambda(0.0, gamma=3.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(math.tanh(5.0), rel=1e-15)  # 2/(1+e^-x) - 1 = tanh(x/2)
    assert dann_lambda(0.5, gamma=2.0) == pytest.approx(2 / (1 + math.exp(-1.0)) - 1, rel=1e-15)
    values = [dann_lambda(p / 100) for p in range(101)]
    assert all(a < b for a, b in zip(values, values[1:])) and values[-1] > 0.9999 and values[-1] < 1
    assert dann_lr(0.0) == 0.01 and dann_lr(1.0) == pytest.approx(0.01 / 11 ** 0.75, rel=1e-15)
    assert dann_lr(0.5, mu0=0.1, alpha=2.0, beta=1.0) == pytest.approx(0.05, rel=1e-15)
    rates = [dann_lr(p / 10) for p in range(11)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


# ------------------------------------------------------------------------------------------------------ MMD, CORAL

def kernel(a, b, sigma2s):
    return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s)) for s in sigma2s) / len(sigma2s)


def loop_mmd(x, y, sigma2s, unbiased):
    """Gretton et al. 2012, Lemma 6 / eq. (5), pair by pair."""
    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j], sigma2s) for i in range(m) for j in range(m) if not (unbiased and i == j))
    yy = sum(kernel(y[i], y[j], sigma2s) for i in range(n) for j in range(n) if not (unbiased and i == j))
    xy = sum(kernel(x[i], y[j], sigma2s) for i in range(m) for j in range(n))
    if unbiased:
        return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2 * xy / (m * n)
    return xx / m ** 2 + yy / n ** 2 - 2 * xy / (m * n)


def median_squared_distance(z):
    values = sorted(float(((z[i] - z[j]) ** 2).sum()) for i in range(len(z)) for j in range(len(z)) if i != j)
    return values[(len(values) - 1) // 2]  # the lower median, as torch.median


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_the_double_loop_formula(unbiased):
    x = torch.randn(7, 3, generator=rng(), dtype=D)
    y = 0.5 + 1.3 * torch.randn(5, 3, generator=rng(1), dtype=D)
    h = median_squared_distance(torch.cat([x, y]))
    kernels = (0.5, 1.0, 2.0)
    want = loop_mmd(x, y, [k * h for k in kernels], unbiased)
    assert torch.allclose(mmd(x, y, kernels, unbiased=unbiased), torch.tensor(want, dtype=D), rtol=1e-13, atol=0)
    want = loop_mmd(x, y, [0.7 * 3.0], unbiased)
    got = MMDLoss((0.7,), unbiased=unbiased, bandwidth=3.0)(x, y)
    assert torch.allclose(got, torch.tensor(want, dtype=D), rtol=1e-13, atol=0)
    pooled = torch.cat([x, y])
    mean = float(torch.cdist(pooled, pooled).pow(2).sum()) / (12 * 11)
    want = loop_mmd(x, y, [mean], unbiased)
    assert torch.allclose(mmd(x, y, (1.0,), heuristic="mean", unbiased=unbiased), torch.tensor(want, dtype=D),
                          rtol=1e-12, atol=0)


def test_mmd_is_zero_for_identical_samples_and_positive_otherwise():
    x = torch.randn(30, 4, generator=rng(), dtype=D)
    assert mmd(x, x.clone()).item() == 0.0
    assert mmd(x.float(), x.float().clone()).item() == 0.0
    assert abs(mmd(x, x.clone(), unbiased=True).item()) < 0.1  # = 2 (mean k off the diagonal - mean k): < 0
    assert mmd(x, x + 0.1).item() > 0


def test_unbiased_mmd_is_centred_on_zero_for_one_distribution_and_positive_for_shifted_ones():
    g = rng(3)
    same, shifted = [], []
    for _ in range(300):
        x, y = torch.randn(20, 2, generator=g, dtype=D), torch.randn(20, 2, generator=g, dtype=D)
        same.append(mmd(x, y, unbiased=True).item())
        shifted.append(mmd(x, y + torch.tensor([1.0, 0.0], dtype=D), unbiased=True).item())
    same, shifted = torch.tensor(same, dtype=D), torch.tensor(shifted, dtype=D)
    se = same.std() / math.sqrt(len(same))
    assert abs(same.mean()) < 3 * se and (same < 0).any()  # unbiased: no floor at 0
    assert shifted.mean() > 20 * shifted.std() / math.sqrt(len(shifted)) and shifted.mean() > 10 * abs(same.mean())


def test_mmd_gradients_flow_to_both_samples_and_the_heuristic_bandwidth_is_a_constant():
    x = torch.randn(6, 3, generator=rng(), dtype=D, requires_grad=True)
    y = torch.randn(4, 3, generator=rng(1), dtype=D, requires_grad=True)
    for unbiased in (False, True):
        assert torch.autograd.gradcheck(lambda a, b: mmd(a, b, (0.5, 2.0), unbiased=unbiased, bandwidth=1.7), (x, y))
        h = median_squared_distance(torch.cat([x, y]).detach())
        got = torch.autograd.grad(mmd(x, y, (0.5, 2.0), unbiased=unbiased), (x, y))
        want = torch.autograd.grad(mmd(x, y, (0.5, 2.0), unbiased=unbiased, bandwidth=h), (x, y))
        assert all(torch.allclose(g, w, rtol=1e-12, atol=1e-15) for g, w in zip(got, want))


def test_coral_matches_sun_and_saenko():
    x = torch.randn(9, 4, generator=rng(), dtype=D)
    y = torch.randn(6, 4, generator=rng(1), dtype=D) @ torch.randn(4, 4, generator=rng(2), dtype=D) + 2.0

    def cov(z):  # eq. (2): (D^T D - (1^T D)^T (1^T D) / n) / (n - 1)
        ones = torch.ones(1, len(z), dtype=D)
        return (z.T @ z - (ones @ z).T @ (ones @ z) / len(z)) / (len(z) - 1)

    want = sum(float(v) ** 2 for v in (cov(x) - cov(y)).flatten()) / (4 * 4 ** 2)
    assert torch.allclose(coral(x, y), torch.tensor(want, dtype=D), rtol=1e-12, atol=0)
    assert torch.allclose(CORALLoss()(x, y), coral(x, y), rtol=0, atol=0)
    assert torch.allclose(torch.cov(x.T), cov(x), rtol=1e-12, atol=1e-14)
    assert coral(x, x + 5.0).abs().item() < 1e-28  # a shift leaves covariances unchanged
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    assert torch.autograd.gradcheck(coral, (xr, yr))


# ---------------------------------------------------------------------------------------- domain-adversarial loss

def small_dann(seed=0, disc=None):
    torch.manual_seed(seed)
    extractor = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh()).to(D)
    discriminator = (disc or DomainDiscriminator(5, hidden=(8,))).to(D)
    x_s = torch.randn(7, 3, generator=rng(seed), dtype=D)
    x_t = torch.randn(4, 3, generator=rng(seed + 1), dtype=D) + 1.0
    return extractor, discriminator, x_s, x_t


@pytest.mark.parametrize("lam", [0.25, 1.0, None])
def test_the_extractor_receives_minus_lambda_times_the_discriminator_loss_gradient(lam):
    extractor, disc, x_s, x_t = small_dann()
    adversary = DomainAdversarialLoss(disc, lam)
    loss = adversary(extractor(x_s), extractor(x_t), progress=0.3)
    factor = dann_lambda(0.3) if lam is None else lam
    assert adversary.last_lambda == factor
    got = torch.autograd.grad(loss, [*extractor.parameters(), *disc.parameters()])
    # by hand, no reversal: the discriminator's own loss (source = 1, target = 0, mean of the two domain means)
    d_s, d_t = disc(extractor(x_s)), disc(extractor(x_t))
    manual = 0.5 * (-F.logsigmoid(d_s).mean() - F.logsigmoid(-d_t).mean())
    want = torch.autograd.grad(manual, [*extractor.parameters(), *disc.parameters()])
    n = len(list(extractor.parameters()))
    assert torch.allclose(loss, manual, rtol=1e-14, atol=0)
    for g, w in zip(got[:n], want[:n]):
        assert torch.allclose(g, -factor * w, rtol=1e-12, atol=1e-15)
    for g, w in zip(got[n:], want[n:]):
        assert torch.allclose(g, w, rtol=1e-12, atol=1e-15)
    accuracy = 0.5 * ((d_s > 0).double().mean() + (d_t <= 0).double().mean())
    assert adversary.domain_accuracy == pytest.approx(accuracy.item(), abs=0)


def test_a_user_discriminator_with_n_by_1_logits_works_and_learns_the_domains():
    disc = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1))
    extractor, disc, x_s, x_t = small_dann(disc=disc)
    adversary = DomainAdversarialLoss(disc, lambda_=0.0)  # no reversal: the discriminator simply learns
    opt = torch.optim.Adam(disc.parameters(), lr=0.05)
    for _ in range(200):
        loss = adversary(extractor(x_s).detach(), extractor(x_t).detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert adversary.domain_accuracy == 1.0 and loss.item() < 0.1


def test_the_discriminator_is_an_mlp_with_one_logit_per_example():
    f = torch.randn(6, 4)
    assert DomainDiscriminator(4)(f).shape == (6,)
    logistic = DomainDiscriminator(4, hidden=())
    assert len(list(logistic.parameters())) == 2 and logistic(f).shape == (6,)
    net = DomainDiscriminator(4, hidden=3, batch_norm=True, dropout=0.1)
    assert [type(m).__name__ for m in net.net] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


# ------------------------------------------------------------------------------------------------ shift generators

def test_moons_follow_the_released_code_and_are_seeded():
    a, b = inter_twinning_moons(seed=0, n_test=20), inter_twinning_moons(seed=0, n_test=20)
    for name in ("source_x", "source_y", "target_x", "target_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    c = inter_twinning_moons(seed=1)
    assert not torch.equal(a.source_x, c.source_x) and not torch.equal(a.target_x, c.target_x)
    assert a.source_x.shape == a.target_x.shape == (150, 2) and a.source_x.dtype == torch.float32
    assert a.source_y.dtype == torch.int64 and a.source_y.bincount().tolist() == [75, 75]
    assert a.test_x.shape == (20, 2) and inter_twinning_moons().test_x.shape == (0, 2)
    assert a.source_x.mean(0).abs().max() < 1e-6  # centred on the source
    flat = inter_twinning_moons(seed=0, angle=0.0)
    assert torch.equal(flat.source_x, a.source_x) and torch.equal(flat.target_y, a.target_y)
    turned = flat.target_x.double() @ rotation_matrix(35.0).T  # counter-clockwise about the source centre
    assert torch.allclose(turned.float(), a.target_x, atol=1e-6, rtol=0)
    assert torch.allclose(rotation_matrix(90.0) @ torch.tensor([1.0, 0.0], dtype=D), torch.tensor([0.0, 1.0], dtype=D),
                          atol=1e-15, rtol=0)
    # the source is two moons: a tiny network separates it perfectly, the same labels as make_moons'
    assert 2.5 < a.source_x[:, 0].max() - a.source_x[:, 0].min() < 7.0  # make_moons' width 3, scaled by 2


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_shifted_digits_keep_labels_and_are_seeded(kind):
    images, labels = load_digits()
    train, test = shifted_digits("train", kind, seed=0), shifted_digits("test", kind, seed=0)
    assert len(train.index) + len(test.index) == 1797 and not set(train.index.tolist()) & set(test.index.tolist())
    assert train.source_x.shape == train.target_x.shape == (1347, 3, 8, 8)
    for split in (train, test):
        assert torch.equal(split.source_y, labels[split.index]) and torch.equal(split.target_y, split.source_y)
        assert torch.equal(split.source_x, images[split.index][:, None].expand(-1, 3, -1, -1))
        assert split.target_x.dtype == torch.float32 and 0 <= split.target_x.min() and split.target_x.max() <= 1
        assert (split.target_x - split.source_x).abs().mean() > 0.1  # a real shift
    counts = train.source_y.bincount().double() / len(train.source_y)
    assert (counts - test.source_y.bincount().double() / len(test.source_y)).abs().max() < 0.01  # stratified
    again, other = shifted_digits("train", kind, seed=0), shifted_digits("train", kind, seed=1)
    assert torch.equal(again.target_x, train.target_x) and not torch.equal(other.target_x, train.target_x)
    assert torch.equal(other.target_y, train.target_y)


def test_texture_target_is_the_mnist_m_blend_of_the_digit_with_a_colour_texture():
    images, _ = load_digits()
    digits = images[:50]  # (50, 8, 8)
    target = shift_colours(digits, "texture", rng(4))  # (50, 3, 8, 8)
    textures = random_texture(50, rng(4), high=TEXTURE_HIGH)  # (50, 3, 8, 8): the same draws
    assert torch.equal(target, (textures - digits[:, None]).abs())  # MNIST-M: |patch - digit|
    assert TEXTURE_HIGH == 0.5 and 0 <= textures.min() and textures.max() <= 0.5  # at most mid-grey
    assert torch.equal(random_texture(50, rng(4)), textures / TEXTURE_HIGH)  # the full-range texture, scaled
    assert (textures[:, 0] != textures[:, 1]).float().mean() > 0.99  # coloured, not grey
    right = torch.corrcoef(torch.stack([textures[..., :-1].flatten(), textures[..., 1:].flatten()]))[0, 1]
    assert right > 0.7 and textures.std() > 0.07  # smooth across neighbouring pixels, yet varied
    # polarity kept: on every channel a full stroke pixel (digit 1) is at least as bright as a background pixel (0)
    stroke, ground = digits[:, None].expand_as(target) == 1, digits[:, None].expand_as(target) == 0
    assert target[stroke].min() >= 0.5 >= target[ground].max()
    with pytest.raises(ValueError, match="high must be a number in"):
        random_texture(2, rng(0), high=0)
    inverted = shift_colours(digits, "inverted", rng(5))
    assert (digits[:, 0, 0] == 0).all()  # the corner pixel is background, where the target is the colour c
    colour = inverted[:, :, :1, :1]  # (50, 3, 1, 1)
    assert torch.equal(inverted, colour * (1 - digits[:, None])) and (colour >= 0.4).all()


# -------------------------------------------------------------------------------------------------- DANN on moons

@pytest.fixture(scope="module")
def moons_runs():
    return [run_moons(35.0, seed, methods=("source_only", "dann"), n_test=500) for seed in range(3)]


def test_dann_beats_source_only_on_the_rotated_moons(moons_runs):
    """Measured at 35 degrees (2000 full-batch steps): source-only 0.77 / 0.79 / 0.81 and DANN 0.95 / 0.95 / 0.97
    on the target sample for seeds 0 / 1 / 2; we assert a margin of 0.10 per seed."""
    for run in moons_runs:
        assert run.source_accuracy["source_only"] == 1.0 and run.source_accuracy["dann"] >= 0.99
        assert run.accuracy["dann"] >= run.accuracy["source_only"] + 0.10, run.accuracy
        assert run.test_accuracy["dann"] >= run.test_accuracy["source_only"] + 0.10, run.test_accuracy
        assert run.domain_accuracy < 0.8  # the discriminator is confused


def test_decision_grid_covers_the_points(moons_runs):
    run = moons_runs[0]
    xs, ys, prob = decision_grid(run.models["dann"], run.data.target_x, resolution=30)
    assert xs.shape == ys.shape == (30,) and prob.shape == (30, 30) and 0 <= prob.min() and prob.max() <= 1
    assert xs[0] < run.data.target_x[:, 0].min() and ys[-1] > run.data.target_x[:, 1].max()
    with pytest.raises(ValueError, match=r"points must be a non-empty \(N, 2\) tensor"):
        decision_grid(run.models["dann"], torch.zeros(0, 2))


# ------------------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_value_errors_naming_the_argument():
    adversary = DomainAdversarialLoss(DomainDiscriminator(5, hidden=()), lambda_=1.0)
    with pytest.raises(ValueError, match="f_s and f_t must have the same feature size: f_s has 5 features, f_t has 4"):
        adversary(torch.randn(3, 5), torch.randn(3, 4))
    with pytest.raises(ValueError, match="discriminator takes in_features=5"):
        adversary(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="target domain is empty: f_t has 0 rows"):
        adversary(torch.randn(3, 5), torch.randn(0, 5))
    with pytest.raises(ValueError, match="source domain is empty: f_s has 0 rows"):
        adversary(torch.randn(0, 5), torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"f_s must be a 2-D float tensor"):
        adversary(torch.randn(3, 5, 2), torch.randn(2, 5))
    seq = DomainAdversarialLoss(nn.Sequential(nn.Linear(7, 1)))
    with pytest.raises(ValueError, match="in_features=7"):
        seq(torch.randn(3, 5), torch.randn(2, 5), progress=0.5)
    with pytest.raises(ValueError, match="progress must be given"):
        seq(torch.randn(3, 7), torch.randn(2, 7))
    with pytest.raises(ValueError, match="discriminator must return one logit per example"):
        DomainAdversarialLoss(nn.Linear(5, 2), 1.0)(torch.randn(3, 5), torch.randn(2, 5))
    with pytest.raises(ValueError, match="discriminator must be an nn.Module"):
        DomainAdversarialLoss(lambda f: f)
    for p in (-0.1, 1.5, math.nan, True, "0.5"):
        with pytest.raises(ValueError, match=r"progress must be a real number in \[0, 1\]"):
            dann_lambda(p)
        with pytest.raises(ValueError, match=r"progress must be a real number in \[0, 1\]"):
            dann_lr(p)
    with pytest.raises(ValueError, match=r"progress must be a real number in \[0, 1\]"):
        DomainAdversarialLoss(DomainDiscriminator(5, ()))(torch.randn(3, 5), torch.randn(2, 5), progress=2.0)
    for lam in (math.nan, math.inf, -1.0, None):
        with pytest.raises(ValueError, match="lambda_ must be a finite real number >= 0"):
            grad_reverse(torch.zeros(2), lam)
    for lam in (math.nan, math.inf, -0.5):
        with pytest.raises(ValueError, match="lambda_ must be a finite real number >= 0"):
            GradientReversalLayer(lam)
        with pytest.raises(ValueError, match="lambda_ must be a finite real number >= 0"):
            DomainAdversarialLoss(DomainDiscriminator(5, ()), lam)
    with pytest.raises(ValueError, match=r"lambda_\(progress\) must be a finite real number"):
        DomainAdversarialLoss(DomainDiscriminator(5, ()), lambda p: math.nan)(torch.randn(3, 5), torch.randn(2, 5),
                                                                            progress=0.1)
    with pytest.raises(ValueError, match="gamma must be a finite real number > 0"):
        dann_lambda(0.5, gamma=0.0)
    with pytest.raises(ValueError, match="x must be a floating-point torch.Tensor"):
        grad_reverse(torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="x and y must have the same feature size, got 3 and 2"):
        mmd(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="y must have at least 2 rows"):
        mmd(torch.randn(4, 3), torch.randn(1, 3), unbiased=True)
    with pytest.raises(ValueError, match="y must have at least 1 rows"):
        mmd(torch.randn(4, 3), torch.randn(0, 3))
    with pytest.raises(ValueError, match="kernels must be a non-empty sequence of finite positive numbers"):
        mmd(torch.randn(4, 3), torch.randn(4, 3), kernels=(1.0, -2.0))
    with pytest.raises(ValueError, match="heuristic must be one of"):
        MMDLoss(heuristic="max")
    with pytest.raises(ValueError, match="bandwidth must be None or a finite positive squared length"):
        mmd(torch.randn(4, 3), torch.randn(4, 3), bandwidth=0.0)
    with pytest.raises(ValueError, match="f_t must have at least 2 rows"):
        CORALLoss()(torch.randn(4, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        DomainDiscriminator(0)
    with pytest.raises(ValueError, match="hidden must be a positive int or a sequence of positive ints"):
        DomainDiscriminator(4, hidden=(8, 0))
    with pytest.raises(ValueError, match="angle must be a finite real number"):
        inter_twinning_moons(angle=math.inf)
    with pytest.raises(ValueError, match="n_per_domain must be an int >= 2"):
        inter_twinning_moons(n_per_domain=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        shifted_digits("train", kind="blur")
    with pytest.raises(ValueError, match="split must be one of"):
        shifted_digits("val")
