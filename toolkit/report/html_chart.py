"""The page's inline SVG chart: active patches and changed lines per pinned version, as bars."""

from __future__ import annotations

import math

from toolkit.report import fmt
from toolkit.report.html_markup import e
from toolkit.report.model import Report


def chart_section(report: Report) -> str:
    return (
        '<section id="chart">\n<h2>Patch load per version</h2>\n<figure>\n'
        + chart_svg(report)
        + "\n<figcaption>Active patches (not retired) and the lines they change (added + removed), per pinned "
        "version. Retired patches are not counted.</figcaption>\n</figure>\n</section>"
    )


def nice_scale(maximum: float) -> tuple[int, int]:
    """(top, step) of an axis from 0 that holds `maximum`, with 1/2/5 × 10^k steps and about four ticks."""
    if maximum <= 0:
        return 1, 1
    raw = maximum / 4
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    return int(math.ceil(maximum / step) * step), step


def chart_svg(report: Report) -> str:
    width, height = 960, 320
    panels = (
        ("patches", "Active patches", lambda v: len(v.series.active)),
        ("lines", "Changed lines (added + removed)", lambda v: v.series.changed_lines),
    )
    colors = {"patches": "#4c78a8", "lines": "#e8741e"}
    n = max(1, len(report.versions))
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title chart-desc" '
        'font-family="system-ui, sans-serif" font-size="12">',
        f'<title id="chart-title">{e(report.project_name)}: active patches and changed lines per version</title>',
        '<desc id="chart-desc">'
        + e(
            "; ".join(
                f"{v.version}: {len(v.series.active)} active patches, {v.series.changed_lines} changed lines"
                if v.series
                else f"{v.version}: no series"
                for v in report.versions
            )
        )
        + "</desc>",
    ]
    panel_width = width / 2
    top, bottom = 48, height - 44
    plot_height = bottom - top
    for index, (metric, label, value_of) in enumerate(panels):
        left = index * panel_width + 64
        plot_width = panel_width - 64 - 24
        values = [value_of(v) if v.series else None for v in report.versions]
        scale_top, step = nice_scale(max((x for x in values if x is not None), default=0))
        parts.append(f'<g class="panel" data-metric="{metric}">')
        parts.append(
            f'<text x="{fmt.number(left)}" y="24" font-size="14" font-weight="600" fill="#1f2328">{e(label)}</text>'
        )
        for tick in range(0, scale_top + 1, step):
            y = bottom - tick / scale_top * plot_height
            parts.append(
                f'<line x1="{fmt.number(left)}" y1="{fmt.number(y)}" x2="{fmt.number(left + plot_width)}" '
                f'y2="{fmt.number(y)}" stroke="{"#59636e" if tick == 0 else "#d1d9e0"}" stroke-width="1"/>'
            )
            parts.append(
                f'<text x="{fmt.number(left - 8)}" y="{fmt.number(y + 4)}" text-anchor="end" fill="#59636e">'
                f"{tick}</text>"
            )
        slot = plot_width / n
        bar_width = min(64.0, slot * 0.6)
        for position, (version, value) in enumerate(zip(report.versions, values, strict=True)):
            center = left + slot * position + slot / 2
            parts.append(
                f'<text x="{fmt.number(center)}" y="{fmt.number(bottom + 18)}" text-anchor="middle" '
                f'fill="#1f2328">{e(version.version)}</text>'
            )
            if value is None:
                parts.append(
                    f'<text x="{fmt.number(center)}" y="{fmt.number(bottom - 8)}" text-anchor="middle" '
                    'fill="#59636e" font-style="italic">no series</text>'
                )
                continue
            bar_height = value / scale_top * plot_height
            parts.append(
                f'<rect class="bar" data-metric="{metric}" data-version="{e(version.version)}" data-value="{value}" '
                f'x="{fmt.number(center - bar_width / 2)}" y="{fmt.number(bottom - bar_height)}" '
                f'width="{fmt.number(bar_width)}" height="{fmt.number(bar_height)}" fill="{colors[metric]}">'
                f"<title>{e(version.version)}: {value} {e(label.lower())}</title></rect>"
            )
            parts.append(
                f'<text x="{fmt.number(center)}" y="{fmt.number(bottom - bar_height - 6)}" text-anchor="middle" '
                f'font-weight="600" fill="#1f2328">{value}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)
