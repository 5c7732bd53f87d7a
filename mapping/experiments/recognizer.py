"""Chapter 5's project: a one-shot recognizer for a writing system it has never seen.

A Prototypical Network (Snell, Swersky & Zemel 2017) is meta-trained on Lake's background alphabets (964
characters x 4 rotations). :class:`Recognizer` wraps its Conv-4 embedding ``f_phi``: :meth:`Recognizer.remember`
stores one prototype per name, the mean embedding of that name's examples (eq. 1),

    c_k = 1/|S_k| sum_{x in S_k} f_phi(x),

and :meth:`Recognizer.predict` names a drawing by the nearest prototype, the arg max of ``-||f_phi(x) - c_k||^2``
(eq. 2). It is scored on Lake et al. 2015's 20 one-shot runs (20 characters of the evaluation alphabets each,
one drawing per character to remember) and on an invented writing system drawn by :mod:`mapping.data.glyphs`.
``python -m mapping.reproduce recognizer --model recognizer.pt`` trains it, scores it and saves it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .. import budget, checkpoint
from ..data import evaluate_lake, glyph_drawings, load_lake_runs
from ..meta.metric import prototypes, protonet_logits
from ..nn import Conv4
from ..results import metric_key
from ..stats import mean_ci95
from .checks import check_ints
from .omniglot_metric import BACKGROUND_FULL, MetricConfig, trained
from .runner import checkpoint_path

Drawing = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]
FORMAT = 1  # version of the saved file


def prepare(image: Drawing, size: int = 28) -> Tensor:
    """A drawing (a file path, a PIL image, or a 2-D array or tensor of grey levels: dark ink on light paper,
    uint8 0-255 or float 0-1) as the network's input ``(1, size, size)``: padded square with white, resized
    with Lanczos like the Omniglot PNGs, inverted so that ink = 1. Strokes about 3% of the side wide, as in
    Omniglot, read best."""
    if isinstance(image, (str, os.PathLike)):
        if not Path(image).is_file():
            raise FileNotFoundError(f"image path={str(image)!r} does not exist")
        with Image.open(image) as opened:
            image = opened.copy()
    elif isinstance(image, (np.ndarray, Tensor)):
        grey = image.detach().cpu().numpy() if isinstance(image, Tensor) else image
        if grey.ndim != 2 or grey.size == 0:
            raise ValueError(f"image as an array must be 2-D (height, width) grey levels, got shape {grey.shape}")
        if grey.dtype != np.uint8:
            if not np.issubdtype(grey.dtype, np.floating) or not np.isfinite(grey).all() \
                    or grey.min() < 0 or grey.max() > 1:
                raise ValueError("image as an array must be uint8 (0-255) or float in [0, 1] (1 = white paper)")
            grey = np.round(grey * 255).astype(np.uint8)
        image = Image.fromarray(grey, mode="L")
    elif not isinstance(image, Image.Image):
        raise TypeError(f"image must be a file path, a PIL image or a 2-D array, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "P"):  # transparent paper is white paper
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    grey = image.convert("L")  # (H, W) white = 255
    side = max(grey.size)
    square = Image.new("L", (side, side), 255)
    square.paste(grey, ((side - grey.size[0]) // 2, (side - grey.size[1]) // 2))
    small = np.asarray(square.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)  # (size, size)
    return torch.from_numpy(1.0 - small / 255.0).unsqueeze(0)  # (1, size, size) ink = 1


class Recognizer(nn.Module):
    """Names drawings from one example each (or a few) with a meta-trained embedding: Prototypical Networks'
    eq. 1 (:meth:`remember`) and eq. 2 (:meth:`scores`, :meth:`predict`). ``backbone`` maps
    ``(n, 1, size, size)`` to ``(n, d)``; it is kept in evaluation mode (batch norm's running statistics), so a
    drawing's name depends on that drawing alone."""

    def __init__(self, backbone: nn.Module, size: int = 28) -> None:
        super().__init__()
        self.backbone, self.size = backbone.eval(), size
        self.names: list[str] = []
        self.register_buffer("protos", torch.empty(0))  # (names, d)

    def batch(self, drawings: Sequence[Drawing] | Tensor) -> Tensor:
        """``(n, 1, size, size)`` on the model's device: a tensor of that shape is taken as network input
        (ink = 1), anything else as a list of drawings for :func:`prepare`."""
        device = next(self.backbone.parameters()).device
        if isinstance(drawings, Tensor) and drawings.dim() == 4:
            if drawings.shape[1:] != (1, self.size, self.size):
                raise ValueError(f"drawings as a 4-D tensor must be (n, 1, {self.size}, {self.size}), "
                                 f"got {tuple(drawings.shape)}")
            return drawings.to(device, torch.float32)
        if isinstance(drawings, (str, os.PathLike, Image.Image, np.ndarray, Tensor)):
            raise ValueError("drawings must be a list of drawings (or an (n, 1, size, size) tensor), got one drawing")
        if len(drawings) == 0:
            raise ValueError("drawings must hold at least one drawing, got none")
        return torch.stack([prepare(d, self.size) for d in drawings]).to(device)  # (n, 1, size, size)

    @torch.no_grad()
    def embed(self, drawings: Sequence[Drawing] | Tensor) -> Tensor:
        """``f_phi``: ``(n, d)`` embeddings."""
        self.backbone.eval()
        return self.backbone(self.batch(drawings)).flatten(1)  # (n, d)

    def remember(self, examples: Mapping[str, Drawing | Sequence[Drawing]]) -> "Recognizer":
        """Store a prototype for each name (eq. 1), from one drawing or a list; a name already known is
        replaced. Returns ``self``."""
        if not isinstance(examples, Mapping) or not examples:
            raise ValueError("examples must be a non-empty mapping {name: drawing or list of drawings}")
        groups = [[d] if isinstance(d, (str, os.PathLike, Image.Image, np.ndarray))
                  or (isinstance(d, Tensor) and d.dim() == 2) else d for d in examples.values()]
        x = torch.cat([self.batch(g) for g in groups])  # (all shots, 1, size, size)
        labels = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([len(g) for g in groups]))
        z = self.embed(x)  # (all shots, d): one forward pass for every name
        protos = prototypes(z[None], labels[None].to(z.device), len(groups))[0]  # (len(examples), d)
        for name, proto in zip(map(str, examples), protos):
            if name in self.names:
                self.protos[self.names.index(name)] = proto
            else:
                self.names.append(name)
                self.protos = torch.cat([self.protos.view(-1, proto.numel()), proto[None]])  # (names, d)
        return self

    def forget(self) -> "Recognizer":
        """Drop every remembered name."""
        self.names, self.protos = [], torch.empty(0, device=self.protos.device)
        return self

    def scores(self, drawings: Sequence[Drawing] | Tensor) -> Tensor:
        """``(n, names)`` logits ``-||f_phi(x) - c_k||^2`` (eq. 2); their softmax is the model's probability."""
        if not self.names:
            raise ValueError("remember(...) at least one name before asking for scores or predictions")
        return protonet_logits(self.embed(drawings)[None], self.protos[None])[0]  # (n, names)

    def predict(self, drawings: Sequence[Drawing] | Tensor) -> list[str]:
        """The name of the nearest prototype for each drawing."""
        return [self.names[i] for i in self.scores(drawings).argmax(1).tolist()]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the embedding and the remembered names atomically (:func:`mapping.checkpoint.save`)."""
        if not isinstance(self.backbone, Conv4) or self.backbone.head is not None:
            raise ValueError("save supports a Conv4 backbone without a head (the book's); "
                             "save other backbones with torch.save(recognizer.state_dict())")
        arch = {"hidden": self.backbone.hidden, "bn": self.backbone.bn, "strided": self.backbone.strided,
                "in_channels": self.backbone.input_shape[0], "image_size": self.backbone.input_shape[1],
                "blocks": len(self.backbone.body)}
        return checkpoint.save({"format": FORMAT, "arch": arch, "size": self.size, "names": list(self.names),
                                "protos": self.protos.cpu(),
                                "backbone": {k: v.cpu() for k, v in self.backbone.state_dict().items()}}, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "Recognizer":
        """A recognizer written by :meth:`save` (read with ``weights_only=True``)."""
        saved = checkpoint.load(path)
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise ValueError(f"path={str(path)!r} is not a recognizer saved by Recognizer.save (format {FORMAT})")
        backbone = Conv4(**saved["arch"])
        backbone.load_state_dict(saved["backbone"])
        recognizer = cls(backbone, saved["size"]).to(device)
        recognizer.names, recognizer.protos = list(saved["names"]), saved["protos"].to(device)
        return recognizer


def lake_error(recognizer: Recognizer, runs=None, root=None):
    """Lake's one-shot error (:class:`~mapping.data.LakeResult`) with exactly the user's calls: remember one
    drawing per character of a run, predict its 20 test drawings."""
    def classify(support: Tensor, query: Tensor) -> Tensor:  # (20, 1, 28, 28) each
        names = [str(i) for i in range(len(support))]
        recognizer.forget().remember({n: support[i:i + 1] for i, n in enumerate(names)})
        return torch.tensor([int(n) for n in recognizer.predict(query)])  # (20,)
    try:
        return evaluate_lake(classify, runs=runs if runs is not None else load_lake_runs(root))
    finally:
        recognizer.forget()


def glyph_accuracy(recognizer: Recognizer, episodes: int, queries: int, seed: int = 0) -> list[float]:
    """Accuracy (%) of each of ``episodes`` one-shot episodes on the invented glyphs: remember one fresh
    drawing of every glyph, name ``queries`` other drawings of each."""
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(episodes):
        drawn = glyph_drawings(per_glyph=1 + queries, generator=generator)  # name -> drawings
        recognizer.forget().remember({name: d[0] for name, d in drawn.items()})
        truth = [name for name, d in drawn.items() for _ in d[1:]]
        predicted = recognizer.predict([x for d in drawn.values() for x in d[1:]])
        scores.append(100.0 * float(np.mean([p == t for p, t in zip(predicted, truth)])))
    recognizer.forget()
    return scores


@dataclass(frozen=True)
class RecognizerConfig:
    """The training of ``python -m mapping.reproduce omniglot-metric``'s background run, and the scoring."""

    episodes: int = BACKGROUND_FULL["episodes"]
    train_way: int = BACKGROUND_FULL["train_way"]
    halve_every: int = BACKGROUND_FULL["halve_every"]
    hidden: int = 64
    glyph_episodes: int = 100
    glyph_queries: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_ints(self, positive=("train_way", "halve_every", "hidden", "glyph_queries"),
                   non_negative=("episodes",))
        if isinstance(self.glyph_episodes, bool) or not isinstance(self.glyph_episodes, int) \
                or self.glyph_episodes < 2:
            raise ValueError(f"glyph_episodes must be an int of at least 2 (for a confidence interval), "
                             f"got {self.glyph_episodes!r}")

    @classmethod
    def for_mode(cls, mode: str | None = None, **overrides) -> "RecognizerConfig":
        """Full: the defaults. Smoke and quick: the training of chapter 2.1's background ProtoNet in that mode
        (``MetricConfig.for_mode("protonet", "background")``), so that the two pages share one network."""
        sizes = budget.pick(smoke=dict(glyph_episodes=5), quick=dict(glyph_episodes=20), full={}, mode_=mode)
        if budget.mode(mode) != "full":
            page = MetricConfig.for_mode("protonet", "background", mode=mode)
            sizes.update({field: getattr(page, field) for field in ("episodes", "train_way", "halve_every", "hidden")})
        return cls(**{**sizes, **overrides})

    def metric(self) -> MetricConfig:
        return MetricConfig(method="protonet", split="background", train_way=self.train_way,
                            episodes=self.episodes, halve_every=self.halve_every, hidden=self.hidden,
                            seed=self.seed)


def key(*parts: object) -> str:
    """The metric keys :func:`run` writes: ``key("lake20", "error")`` -> ``"recognizer/lake20/error"``."""
    return metric_key("recognizer", *parts)


def run(config: RecognizerConfig, root=None, progress: bool | None = None, strict: bool = True,
        device: torch.device | str = "cpu", checkpoint_dir=None) -> tuple[dict[str, float], Recognizer]:
    """Train and score; returns the metrics and the recognizer (with nothing remembered). Metrics:
    ``recognizer/lake20/error`` (%, with ``.../ci95`` over the 20 runs and ``.../worst_run``),
    ``recognizer/glyphs/acc`` and ``.../ci95`` over episodes, ``recognizer/train_seconds``.

    The network is :func:`~mapping.experiments.omniglot_metric.trained`'s: trained once per build for a given
    configuration and package code (``MAPPING_MEMO=0`` trains it every time); ``train_seconds`` is the time its
    training took."""
    ckpt = checkpoint_path(checkpoint_dir, "recognizer", asdict(config))
    net, seconds = trained(config.metric(), device, checkpoint=ckpt, progress=progress, root=root, strict=strict)
    recognizer = Recognizer(net.backbone)
    metrics = {key("train_seconds"): seconds}
    lake = lake_error(recognizer, load_lake_runs(root, strict=strict))
    _, ci = mean_ci95(lake.run_errors)
    metrics.update({key("lake20", "error"): lake.error, key("lake20", "ci95"): ci.item(),
                    key("lake20", "worst_run"): lake.run_errors.max().item()})
    acc, ci = mean_ci95(torch.tensor(glyph_accuracy(recognizer, config.glyph_episodes, config.glyph_queries,
                                                    config.seed)))
    metrics.update({key("glyphs", "acc"): acc.item(), key("glyphs", "ci95"): ci.item()})
    return metrics, recognizer


__all__ = ["Recognizer", "RecognizerConfig", "glyph_accuracy", "key", "lake_error", "prepare", "run"]
