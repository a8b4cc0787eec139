"""bench/map.py builds its pages with the report's own renderer: its synthetic run must stay a
run the renderer accepts (the bench broke silently once when members gained columns)."""

from __future__ import annotations

import json

from bench.map import as_svg, synthetic_report
from pipeline import report


def test_the_map_bench_renders_its_synthetic_run_both_ways():
    data = synthetic_report(200, 4)
    figure = json.loads(report.map_figure(data).to_json())
    assert {trace["type"] for trace in figure["data"]} == {"scattergl"}  # the map as it ships
    assert {trace["type"] for trace in as_svg(figure)["data"]} == {"scatter"}  # the baseline
    for shown in (figure, as_svg(figure)):
        page = report.render_html(data, figure=shown)
        assert "account 199" in page  # every synthetic user is on the map
