"""Charts render as self-contained, escaped SVG."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np

from bastion.assess.plots import ImageGrid, LineChart, Series, render_svg


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output, parsed to check it is well-formed


def test_line_chart_linear_and_log_axes():
    chart = LineChart(
        "ROC <b>",
        "FPR",
        "TPR",
        (
            Series("attack & co", (1e-4, 1e-3, 1e-2, 1.0), (1e-3, 1e-2, 0.2, 1.0)),
            Series("with gap", (0.0, math.nan, 0.5), (0.1, 0.2, 0.3), dashed=True),
        ),
        log_x=True,
        log_y=True,
        diagonal=True,
    )
    svg = render_svg(chart)
    root = _parse(svg)
    assert root.tag.endswith("svg")
    assert "ROC &lt;b&gt;" in svg
    assert "attack &amp; co" in svg
    assert "1e-04" in svg  # log ticks at the decades
    assert svg.count("<polyline") == 1  # the second keeps one point: x=0 and NaN are skipped
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_line_chart_degenerate_data():
    for series in (
        (),
        (Series("flat", (1.0,), (0.5,)),),
        (Series("nan", (math.nan,), (math.nan,)),),
    ):
        _parse(render_svg(LineChart("t", "x", "y", series)))


def test_image_grid_scales_each_image():
    images = (
        ("class 0", np.arange(16, dtype=float).reshape(4, 4)),
        ("rgb", np.zeros((3, 2, 2))),
        ("channel", np.ones((1, 3, 3))),
    )
    svg = render_svg(ImageGrid("triggers", images))
    _parse(svg)
    assert svg.count("<rect") == 16 + 4 + 9
    assert 'fill="#000000"' in svg
    assert 'fill="#ffffff"' in svg
