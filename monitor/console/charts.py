"""Charts drawn on the server as inline SVG: no script, no library, prints as it shows.

Colours come from the stylesheet (classes series-0 ... series-5), so the page's CSP needs no inline style.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

Point = tuple[float, float]


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = next(s * 10 ** e for e in range(-3, 7) for s in (1, 2, 5) if s * 10 ** e >= raw)
    first = -(-lo // step) * step
    return [first + i * step for i in range(int((hi - first) // step) + 1)]


def _label(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.3g}"


def line_chart(series: Sequence[tuple[str, Sequence[Point]]], x_label: str, y_label: str,
               threshold: float | None = None, y_max: float = 1.0, width: int = 720, height: int = 220,
               title: str = "") -> Markup:
    """Lines of (x, y) points over a shared x axis; y from 0 to y_max; an optional dashed threshold."""
    left, right, top, bottom = 44, 12, 12, 34
    xs = [x for _, pts in series for x, _ in pts]
    if not xs:
        return Markup('<p class="muted">No points to draw.</p>')
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1.0
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)
    sy = lambda y: top + (1 - min(max(y / y_max, 0.0), 1.0)) * (height - top - bottom)
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or y_label)}">']
    if title:
        out.append(f"<title>{escape(title)}</title>")
    for y in _ticks(0, y_max, 4):
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    for x in _ticks(x0, x1, 6):
        out.append(f'<text class="tick" x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{_label(x)}</text>')
    out.append(f'<text class="axis" x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">'
               f"{escape(x_label)}</text>")
    if threshold is not None:
        out.append(f'<line class="threshold" x1="{left}" x2="{width - right}" y1="{sy(threshold):.1f}" '
                   f'y2="{sy(threshold):.1f}"><title>threshold {threshold:g}</title></line>')
    for i, (name, pts) in enumerate(series):
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline class="series series-{i % 6}" points="{coords}"><title>{escape(name)}</title></polyline>')
        if len(pts) == 1:
            x, y = pts[0]
            out.append(f'<circle class="series-dot series-{i % 6}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3"/>')
    out.append("</svg>")
    legend = "".join(f'<li><span class="swatch series-{i % 6}"></span>{escape(name)}</li>'
                     for i, (name, _) in enumerate(series))
    # every text in it went through escape(); the rest is numbers we formatted
    return Markup("".join(out) + (f'<ul class="legend">{legend}</ul>' if len(series) > 1 else ""))  # nosec B704


def bar_chart(labels: Sequence[str], values: Sequence[int], width: int = 720, height: int = 90, title: str = "") -> Markup:
    """One bar per label (days), the tallest reaching the top; each bar says its value on hover."""
    left, right, top, bottom = 30, 6, 6, 18
    top_value = max(values, default=0) or 1
    slot = (width - left - right) / max(len(values), 1)
    out = [f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           f'<text class="tick" x="{left - 4}" y="{top + 8}" text-anchor="end">{top_value}</text>',
           f'<line class="grid" x1="{left}" x2="{width - right}" y1="{height - bottom}" y2="{height - bottom}"/>']
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        h = (height - top - bottom) * v / top_value
        x = left + i * slot
        out.append(f'<rect class="bar" x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{max(slot - 2, 1):.1f}" '
                   f'height="{h:.1f}"><title>{escape(label)}: {v}</title></rect>')
    for i in (0, len(labels) - 1) if labels else ():
        out.append(f'<text class="tick" x="{left + (i + 0.5) * slot:.1f}" y="{height - 4}" text-anchor="middle">'
                   f"{escape(labels[i][5:])}</text>")
    out.append("</svg>")
    return Markup("".join(out))  # nosec B704  # labels escaped, the rest numbers
