"""Charts as inline SVG for the self-contained HTML report (stable API).

Families describe what to draw with :class:`LineChart` (curves on linear or log axes: robust
accuracy versus eps, membership ROC on log-log axes, fidelity versus queries) or
:class:`ImageGrid` (reversed triggers, reconstructed classes); :func:`render_svg` draws either
without any plotting library or external resource.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Chart", "ImageGrid", "LineChart", "Series", "render_svg"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
_WIDTH, _HEIGHT = 560, 340
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 150, 34, 48


@dataclass(frozen=True, slots=True)
class Series:
    """One curve: ``label`` and its points (NaN points are skipped)."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class LineChart:
    """Curves on shared axes.

    Attributes:
        title: the chart's title.
        x_label: the x axis's label.
        y_label: the y axis's label.
        series: the curves.
        log_x: logarithmic x axis (non-positive points are skipped).
        log_y: logarithmic y axis.
        x_range: fixed x limits, else from the data.
        y_range: fixed y limits, else from the data.
        diagonal: draw the y = x reference line (chance on a ROC curve).
    """

    title: str
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    log_x: bool = False
    log_y: bool = False
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    diagonal: bool = False


@dataclass(frozen=True, slots=True)
class ImageGrid:
    """Small images side by side, each with a caption.

    Attributes:
        title: the grid's title.
        images: ``(caption, array)``; an array is ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)``
            (channels first) or ``(H, W, 3)``; each is scaled to its own min..max unless
            ``value_range`` is given.
        value_range: the values drawn black and white.
        cell: pixels per image side.
    """

    title: str
    images: tuple[tuple[str, NDArray[np.floating[Any]]], ...]
    value_range: tuple[float, float] | None = None
    cell: int = 96


Chart = LineChart | ImageGrid


def render_svg(chart: Chart) -> str:
    """The chart as one ``<svg>`` element."""
    if isinstance(chart, ImageGrid):
        return _image_grid(chart)
    return _line_chart(chart)


def _ticks(low: float, high: float, log: bool) -> list[float]:
    if log:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        return [10.0**e for e in range(first, last + 1)]
    span = high - low
    raw = span / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(s - raw))
    start = math.ceil(low / step - 1e-9) * step
    count = math.floor((high - start) / step + 1e-9) + 1
    return [start + i * step for i in range(count)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:.4g}"


def _limits(
    values: Sequence[float], fixed: tuple[float, float] | None, log: bool
) -> tuple[float, float]:
    if fixed is not None:
        return fixed
    finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not finite:
        return (0.1, 1.0) if log else (0.0, 1.0)
    low, high = min(finite), max(finite)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        low, high = (low / 10, high * 10) if log else (low - pad, high + pad)
    return low, high


def _line_chart(chart: LineChart) -> str:
    xs = [v for s in chart.series for v in s.x]
    ys = [v for s in chart.series for v in s.y]
    x_low, x_high = _limits(xs, chart.x_range, chart.log_x)
    y_low, y_high = _limits(ys, chart.y_range, chart.log_y)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def scale(v: float, low: float, high: float, log: bool) -> float:
        if log:
            return (math.log10(v) - math.log10(low)) / (math.log10(high) - math.log10(low))
        return (v - low) / (high - low)

    def px(x: float) -> float:
        return _LEFT + plot_w * scale(x, x_low, x_high, chart.log_x)

    def py(y: float) -> float:
        return _TOP + plot_h * (1 - scale(y, y_low, y_high, chart.log_y))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="{escape(chart.title)}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{_WIDTH / 2 - _RIGHT / 2}" y="18" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(chart.title)}</text>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#444"/>',
    ]
    for tick in _ticks(x_low, x_high, chart.log_x):
        if x_low - 1e-12 <= tick <= x_high + 1e-12:
            x = px(tick)
            parts.append(
                f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_TOP + plot_h}" '
                'stroke="#ddd"/>'
                f'<text x="{x:.1f}" y="{_TOP + plot_h + 14}" text-anchor="middle">'
                f"{_fmt(tick)}</text>"
            )
    for tick in _ticks(y_low, y_high, chart.log_y):
        if y_low - 1e-12 <= tick <= y_high + 1e-12:
            y = py(tick)
            parts.append(
                f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" '
                'stroke="#ddd"/>'
                f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>'
            )
    parts.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 10}" text-anchor="middle">'
        f"{escape(chart.x_label)}</text>"
        f'<text x="14" y="{_TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2})">{escape(chart.y_label)}</text>'
    )
    if chart.diagonal:
        low, high = max(x_low, y_low), min(x_high, y_high)
        if low < high:
            parts.append(
                f'<line x1="{px(low):.1f}" y1="{py(low):.1f}" x2="{px(high):.1f}" '
                f'y2="{py(high):.1f}" stroke="#999" stroke-dasharray="4 3"/>'
            )
    for index, series in enumerate(chart.series):
        colour = _COLOURS[index % len(_COLOURS)]
        points = [
            (px(x), py(y))
            for x, y in zip(series.x, series.y, strict=True)
            if math.isfinite(x)
            and math.isfinite(y)
            and (x > 0 or not chart.log_x)
            and (y > 0 or not chart.log_y)
        ]
        dash = ' stroke-dasharray="6 3"' if series.dashed else ""
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            )
        if len(points) <= 40:
            parts.extend(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in points
            )
        legend_y = _TOP + 8 + 16 * index
        parts.append(
            f'<line x1="{_WIDTH - _RIGHT + 10}" y1="{legend_y}" x2="{_WIDTH - _RIGHT + 28}" '
            f'y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{_WIDTH - _RIGHT + 32}" y="{legend_y + 4}">{escape(series.label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _to_rgb(image: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"cannot draw an image of shape {image.shape}")
    return array


def _image_grid(grid: ImageGrid) -> str:
    cell, gap = grid.cell, 12
    count = max(1, len(grid.images))
    per_row = min(count, 6)
    rows = math.ceil(count / per_row)
    width = per_row * (cell + gap) + gap
    height = 28 + rows * (cell + gap + 16)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(grid.title)}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{gap}" y="18" font-size="13" font-weight="bold">{escape(grid.title)}</text>',
    ]
    for index, (caption, image) in enumerate(grid.images):
        rgb = _to_rgb(image)
        low, high = grid.value_range or (float(rgb.min()), float(rgb.max()))
        scaled = np.clip((rgb - low) / (high - low if high > low else 1.0), 0.0, 1.0)
        levels = np.round(scaled * 255).astype(np.int64)
        h, w = levels.shape[:2]
        size = cell / max(h, w)
        ox = gap + (index % per_row) * (cell + gap)
        oy = 28 + (index // per_row) * (cell + gap + 16)
        parts.append(f'<g transform="translate({ox},{oy}) scale({size:.4f})">')
        parts.extend(
            f'<rect x="{c}" y="{r}" width="1.02" height="1.02" '
            f'fill="#{levels[r, c, 0]:02x}{levels[r, c, 1]:02x}{levels[r, c, 2]:02x}"/>'
            for r in range(h)
            for c in range(w)
        )
        parts.append("</g>")
        parts.append(
            f'<text x="{ox + cell / 2}" y="{oy + cell + 13}" text-anchor="middle">'
            f"{escape(caption)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
