"""An invented writing system, drawn by hand-like random strokes: drawings that are in no Omniglot alphabet.

Each glyph is a few strokes, polylines in the unit square (y down, as on paper). :func:`draw_glyph` renders one
drawing of it as a 105x105 image with black ink on white, like an Omniglot PNG, after the variations that
make two people's drawings of one character differ (Lake et al. 2015 model them as motor noise): a small random
affine map of the whole glyph, a jitter of every control point and a random pen width. The book's chapter 5
uses them as "new drawings" for a recognizer that has never seen them.
"""
from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, r: float, start: float, stop: float, points: int = 12) -> Stroke:
    """Points on a circle of centre ``(cx, cy)`` and radius ``r``, from angle ``start`` to ``stop`` (degrees)."""
    angles = [math.radians(start + (stop - start) * i / (points - 1)) for i in range(points)]
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]


GLYPHS: dict[str, list[Stroke]] = {  # name -> strokes; the names say what each glyph looks like
    "hook": [[(0.3, 0.2), (0.3, 0.7)], _arc(0.45, 0.7, 0.15, 180, 0)],
    "fork": [[(0.5, 0.85), (0.5, 0.45)], [(0.5, 0.45), (0.25, 0.15)], [(0.5, 0.45), (0.75, 0.15)]],
    "ladder": [[(0.3, 0.15), (0.3, 0.85)], [(0.7, 0.15), (0.7, 0.85)], [(0.3, 0.4), (0.7, 0.4)],
               [(0.3, 0.65), (0.7, 0.65)]],
    "eye": [_arc(0.5, 0.5, 0.3, 0, 360, 20), [(0.45, 0.5), (0.55, 0.5)]],
    "wave": [[(0.15, 0.5), (0.3, 0.3), (0.5, 0.5), (0.7, 0.7), (0.85, 0.5)]],
    "gate": [[(0.25, 0.85), (0.25, 0.25), (0.75, 0.25), (0.75, 0.85)], [(0.15, 0.25), (0.85, 0.25)]],
    "arrow": [[(0.2, 0.8), (0.75, 0.25)], [(0.45, 0.25), (0.75, 0.25), (0.75, 0.55)]],
    "zigzag": [[(0.2, 0.2), (0.8, 0.35), (0.2, 0.5), (0.8, 0.65), (0.2, 0.8)]],
    "moon": [_arc(0.5, 0.5, 0.3, 60, 300, 16), [(0.7, 0.35), (0.7, 0.65)]],
    "star": [[(0.5, 0.15), (0.5, 0.85)], [(0.2, 0.35), (0.8, 0.65)], [(0.2, 0.65), (0.8, 0.35)]],
}


def draw_glyph(strokes: list[Stroke], generator: torch.Generator | None = None, *, size: int = 105,
         jitter: float = 0.025, rotate: float = 10.0, scale: float = 0.1, shift: float = 0.05,
         width: tuple[int, int] = (2, 5)) -> Image.Image:
    """One drawing of ``strokes`` as a ``size`` x ``size`` greyscale image, black ink on white.

    The glyph is rotated by up to ``rotate`` degrees, scaled by up to ``1 +- scale`` and shifted by up to
    ``shift`` (fractions of the side), every point moves by up to ``jitter``, and the pen is ``width`` pixels
    wide (inclusive range at 105 pixels, scaled with ``size``), all drawn from ``generator``.
    """
    if not strokes or any(len(stroke) < 2 for stroke in strokes):
        raise ValueError("strokes must be a non-empty list of strokes of at least 2 (x, y) points each")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size!r}")

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    angle = math.radians(uniform(-rotate, rotate))
    factor = uniform(1 - scale, 1 + scale)
    dx, dy = uniform(-shift, shift), uniform(-shift, shift)
    cos, sin = math.cos(angle) * factor, math.sin(angle) * factor
    pen = round(uniform(width[0], width[1] + 0.999) * size / 105)
    image = Image.new("L", (size, size), 255)  # white paper
    canvas = ImageDraw.Draw(image)
    for stroke in strokes:
        points = []
        for x, y in stroke:
            x, y = x - 0.5 + uniform(-jitter, jitter), y - 0.5 + uniform(-jitter, jitter)
            points.append(((cos * x - sin * y + 0.5 + dx) * size, (sin * x + cos * y + 0.5 + dy) * size))
        canvas.line(points, fill=0, width=max(1, pen), joint="curve")
    return image


def glyph_drawings(names: list[str] | None = None, per_glyph: int = 2, generator: torch.Generator | None = None,
             **kwargs) -> dict[str, list[Image.Image]]:
    """``per_glyph`` drawings of each glyph in ``names`` (default: all of :data:`GLYPHS`), by name."""
    names = list(GLYPHS) if names is None else list(names)
    unknown = [name for name in names if name not in GLYPHS]
    if unknown or not names:
        raise ValueError(f"names must be glyph names from {sorted(GLYPHS)}, got unknown {unknown or names!r}")
    if isinstance(per_glyph, bool) or not isinstance(per_glyph, int) or per_glyph < 1:
        raise ValueError(f"per_glyph must be a positive int, got {per_glyph!r}")
    return {name: [draw_glyph(GLYPHS[name], generator, **kwargs) for _ in range(per_glyph)] for name in names}


__all__ = ["GLYPHS", "draw_glyph", "glyph_drawings"]
