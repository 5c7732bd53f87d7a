"""Domain-shift toys, no download: DANN's inter-twinning moons and an MNIST-M-like shift of scikit-learn's digits.

**Inter-twinning moons** (Ganin et al. 2016, JMLR, §5.1.1, Figure 2). As the authors' released code sets it up
(GRAAL-Research/domain_adversarial_neural_network, ``experiments_moons.py``, ``make_trans_moons``): source and
target are two independent draws of ``sklearn.datasets.make_moons(n, noise=noise)`` (150 points each, half per
class); both are translated by minus the source mean and scaled by 2, and the target is then rotated by ``angle``
degrees counter-clockwise about the origin, i.e. about the centre of the source data (the paper uses 35°).
The target labels are kept for evaluation only. Our draws come from seeded streams (their code fixes
``random_state=1`` and ``2``).

**Shifted digits**: MNIST-M (Ganin & Lempitsky 2015, ICML, §4.1; Ganin et al. 2016, §5.2.2) blends each MNIST
digit with a patch of a colour photo (BSDS500): ``|patch - digit|`` per channel. Here the digits are
``sklearn.datasets.load_digits`` (8x8, values 0-16 scaled to [0, 1]); the source is the plain digit on all three
channels, the target the same image shifted in colour. ``kind``:

* ``"texture"`` (MNIST-M-like): ``|T - digit|`` with ``T`` a random smooth colour texture in [0, 0.5]
  (:data:`TEXTURE_HIGH`; a 3x3 grid of random colours upsampled bilinearly to 8x8, plus fine uniform noise of
  amplitude 0.2, clipped to [0, 1], then scaled by 0.5), standing in for the photo. The cap keeps the texture at or
  below mid-grey, so the blend never flips the digit's polarity: a stroke pixel (``digit = 1``) becomes
  ``1 - T >= 0.5``, the background (``digit = 0``) ``T <= 0.5``, i.e. the digit stays lighter than its background
  on every channel, as on MNIST-M's images over darker photo patches; colour, background texture and contrast
  change. With ``T`` in [0, 1] (the cap 1) about half the pixels flip polarity, often within one image, and a
  network trained on the plain digits reads the flipped images as systematically wrong classes (measured with
  :class:`mapping.experiments.digits_da.DigitsNet`, 800 Adam steps, one seed, on the shifted test images: 4%, 0%
  where ``T`` lies in [0.5, 1]; with caps 0.5, 0.6, 0.7, 0.8: 74%, 55%, 34%, 21%, and 95%, 91%, 89%, 84% when
  trained on shifted images). The cap is set by the polarity rule, not tuned. A polarity flip is the separate kind
  ``"inverted"``.
* ``"inverted"``: the negative in a random colour, ``c * (1 - digit)``, ``c`` uniform in [0.4, 1]^3 per image.
* ``"noise"``: the digit plus Gaussian colour noise (standard deviation 0.3 per pixel and channel), clipped to [0, 1].

Train and test are disjoint sets of the 1797 images, stratified by class (:func:`.multidigits.digit_split`,
``test_fraction=0.25``: 1347 and 450). Target image ``i`` is source image ``i`` shifted, so labels match by index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_int, check_number
from ..device import generator
from .multidigits import digit_split, load_digits

SHIFT_KINDS = ("texture", "inverted", "noise")
SPLITS = ("train", "test")
TEXTURE_HIGH = 0.5  # the texture's brightest value: at most mid-grey, so the blend keeps polarity


@dataclass(frozen=True)
class DomainShift:
    """A labelled source and a target of the same classes; ``target_y`` is for evaluation only.

    ``source_x (N_s, ...)`` float32, ``source_y (N_s,)`` int64, ``target_x (N_t, ...)``, ``target_y (N_t,)``.
    ``test_x``, ``test_y``: a held-out draw of the target distribution (moons, ``n_test`` rows; empty by default).
    ``index (N,)``: for digits, the rows of ``load_digits()`` that source and target image ``i`` come from.
    """

    source_x: Tensor
    source_y: Tensor
    target_x: Tensor
    target_y: Tensor
    test_x: Tensor | None = None
    test_y: Tensor | None = None
    index: Tensor | None = None


def _moons(n: int, noise: float, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_moons  # imported here: importing sklearn costs ~1 s
    state = int(np.random.SeedSequence((seed, stream)).generate_state(1)[0])
    return make_moons(n, noise=noise, random_state=state)  # (n, 2), (n,)


def rotation_matrix(angle: float) -> Tensor:
    """The counter-clockwise rotation by ``angle`` degrees, ``(2, 2)`` float64, acting on column vectors."""
    t = math.radians(angle)
    return torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]], dtype=torch.float64)  # (2, 2)


def inter_twinning_moons(n_per_domain: int = 150, noise: float = 0.05, angle: float = 35.0, seed: int = 0, *,
                         n_test: int = 0, scale: float = 2.0) -> DomainShift:
    """DANN's toy (Ganin et al. 2016, §5.1.1): two moons as source, an independent draw rotated by ``angle`` as target.

    Each domain has ``n_per_domain`` points (``make_moons`` splits them between the two classes); ``n_test`` more
    target points, from a third stream, go to ``test_x``/``test_y``. ``x`` float32 ``(N, 2)``, ``y`` int64 ``(N,)``.
    """
    check_int("n_per_domain", n_per_domain, 2)
    check_int("n_test", n_test, 0)
    check_int("seed", seed, 0)
    check_number("noise", noise, 0.0)
    check_number("scale", scale, 1e-300)
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not math.isfinite(angle):
        raise ValueError(f"angle must be a finite real number (degrees), got {angle!r}")
    draws = [_moons(n, noise, seed, s) for s, n in enumerate((n_per_domain, n_per_domain, n_test)) if n > 0]
    (xs, ys), *rest = [(torch.from_numpy(x), torch.from_numpy(y).to(torch.int64)) for x, y in draws]
    centre = xs.mean(0)  # (2,) float64
    xs = scale * (xs - centre)  # (N, 2), centred on the source
    rot = rotation_matrix(angle)  # (2, 2)
    targets = [(scale * (x - centre) @ rot.T, y) for x, y in rest]  # each (N, 2): rotated about the source centre
    xt, yt = targets[0]
    xv, yv = targets[1] if n_test else (torch.zeros(0, 2, dtype=torch.float64), torch.zeros(0, dtype=torch.int64))
    f = torch.float32
    return DomainShift(xs.to(f), ys, xt.to(f), yt, xv.to(f), yv)


def random_texture(n: int, g: torch.Generator, grid: int = 3, size: int = 8, fine: float = 0.2,
                   high: float = 1.0) -> Tensor:
    """``n`` smooth random colour textures in [0, ``high``]: a ``grid`` x ``grid`` colour grid upsampled
    bilinearly, plus uniform noise of amplitude ``fine``, clipped to [0, 1], times ``high``: ``(n, 3, size, size)``."""
    if isinstance(high, bool) or not isinstance(high, (int, float)) or not 0 < high <= 1:
        raise ValueError(f"high must be a number in (0, 1] (the brightest texture value), got {high!r}")
    coarse = torch.rand(n, 3, grid, grid, generator=g)  # (n, 3, grid, grid)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)  # (n, 3, size, size)
    noisy = smooth + fine * (torch.rand(n, 3, size, size, generator=g) - 0.5)  # (n, 3, size, size)
    return high * noisy.clamp(0, 1)  # (n, 3, size, size)


def shift_colours(digits: Tensor, kind: str, g: torch.Generator) -> Tensor:
    """The target image of each digit ``(N, 8, 8)`` in [0, 1] for shift ``kind``: ``(N, 3, 8, 8)`` in [0, 1]."""
    rgb = digits[:, None].expand(-1, 3, -1, -1)  # (N, 3, 8, 8)
    n = len(digits)
    if kind == "texture":
        return (random_texture(n, g, high=TEXTURE_HIGH) - rgb).abs()  # (N, 3, 8, 8), MNIST-M's blend
    if kind == "inverted":
        colour = 0.4 + 0.6 * torch.rand(n, 3, 1, 1, generator=g)  # (N, 3, 1, 1)
        return colour * (1 - rgb)  # (N, 3, 8, 8)
    return (rgb + 0.3 * torch.randn(rgb.shape, generator=g)).clamp(0, 1)  # (N, 3, 8, 8)


def shifted_digits(split: str = "train", kind: str = "texture", seed: int = 0, *, test_fraction: float = 0.25,
                   split_seed: int = 0) -> DomainShift:
    """scikit-learn's digits as source and a colour-shifted copy as target (MNIST-M-like), for one ``split``.

    ``source_x``: the digits on 3 channels ``(N, 3, 8, 8)``; ``target_x``: the same images shifted by ``kind``
    (see the module docstring); ``source_y == target_y``, the digits' labels; ``index``: their rows in
    ``load_digits()``. ``seed`` draws the shift (train and test from separate streams), ``split_seed`` the split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if kind not in SHIFT_KINDS:
        raise ValueError(f"kind must be one of {SHIFT_KINDS}, got {kind!r}")
    check_int("seed", seed, 0)
    images, labels = load_digits()  # (1797, 8, 8) in [0, 1], (1797,)
    index = digit_split(test_fraction, split_seed)[split]  # (N,)
    digits, y = images[index], labels[index]  # (N, 8, 8), (N,)
    g = generator(seed, 10 + SPLITS.index(split))
    target = shift_colours(digits, kind, g)  # (N, 3, 8, 8)
    source = digits[:, None].expand(-1, 3, -1, -1).contiguous()  # (N, 3, 8, 8)
    return DomainShift(source, y, target, y.clone(), index=index)


__all__ = ["DomainShift", "SHIFT_KINDS", "TEXTURE_HIGH", "inter_twinning_moons", "random_texture", "rotation_matrix",
           "shift_colours", "shifted_digits"]
