"""Three inputs that are not digits, drawn by code: a question mark, a letter A, a stick figure.

Each glyph is a set of strokes (polylines in pixel coordinates, x right, y
down, on the 32x32 grid) rendered with a soft pen: a pixel at distance d from
the nearest stroke gets ``clip(1 - (d - R) / SOFT, 0, 1)`` with R = 1.0 and
SOFT = 1.0, so strokes are about 2 px solid with a 1 px grey edge, like an MNIST
digit padded to 32x32. Glyphs stay in the central 20x20 box where digits sit.
"""
from __future__ import annotations

import numpy as np

SIDE = 32
PEN_RADIUS = 1.0
PEN_SOFT = 1.0


def _arc(cx: float, cy: float, r: float, a0: float, a1: float, steps: int = 24) -> list[tuple[float, float]]:
    """Points on a circle arc from angle a0 to a1 (degrees, 0 = right, 90 = down)."""
    t = np.radians(np.linspace(a0, a1, steps))
    return list(zip(cx + r * np.cos(t), cy + r * np.sin(t)))


def _segment_distance(px: np.ndarray, py: np.ndarray, a, b) -> np.ndarray:
    """Distance from every pixel centre (px, py) to the segment a-b."""
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    den = dx * dx + dy * dy
    t = np.zeros_like(px) if den == 0 else np.clip(((px - ax) * dx + (py - ay) * dy) / den, 0, 1)
    return np.hypot(px - (ax + t * dx), py - (ay + t * dy))


def render(strokes: list[list[tuple[float, float]]], side: int = SIDE) -> np.ndarray:
    """Strokes (each a list of (x, y) points; one point = a dot) -> [side, side] float32 in [0, 1]."""
    py, px = np.mgrid[0:side, 0:side].astype(np.float64) + 0.5
    d = np.full((side, side), np.inf)
    for pts in strokes:
        if len(pts) == 1:
            pts = [pts[0], pts[0]]
        for a, b in zip(pts[:-1], pts[1:]):
            d = np.minimum(d, _segment_distance(px, py, a, b))
    return np.clip(1.0 - (d - PEN_RADIUS) / PEN_SOFT, 0.0, 1.0).astype(np.float32)


def question_mark() -> np.ndarray:
    hook = _arc(16, 11.5, 5, 190, 400) + [(16, 17.5), (16, 20.5)]
    return render([hook, [(16, 25)]])


def letter_a() -> np.ndarray:
    return render([[(9.5, 26), (16, 6.5), (22.5, 26)], [(12, 19), (20, 19)]])


def stick_figure() -> np.ndarray:
    head = _arc(16, 9, 3, 0, 360, 32)
    return render([head, [(16, 12), (16, 20)], [(10, 14.5), (22, 14.5)],
                   [(11, 26.5), (16, 20), (21, 26.5)]])


def glyphs() -> dict[str, np.ndarray]:
    """{"question mark", "letter A", "stick figure"} -> [32, 32] float32 images in [0, 1]."""
    return {"question mark": question_mark(), "letter A": letter_a(), "stick figure": stick_figure()}
