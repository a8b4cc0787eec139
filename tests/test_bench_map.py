"""bench/map.py builds its pages with the report's own renderer: its synthetic run must stay a
run the renderer accepts (the bench broke silently once when members gained columns)."""

from __future__ import annotations

import json
import re

from bench.map import as_svg, synthetic_report
from pipeline import report


def test_the_map_bench_renders_its_synthetic_run_both_ways():
    data = synthetic_report(200, 4)
    figure = json.loads(report.map_figure(data).to_json())
    webgl = report.render_html(data, figure=figure)
    svg = report.render_html(data, figure=as_svg(figure))
    traces = re.compile(r'"type": "(scatter(?:gl)?)"')
    assert "scattergl" in traces.findall(webgl)  # the map as it ships
    assert "scattergl" not in traces.findall(svg)  # the baseline: the same map in SVG
