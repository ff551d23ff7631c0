"""Drawing a :class:`edge.report.Report`: one matplotlib figure, saved as PNG or embedded in a page.

The page is one file with nothing to fetch (the figure is a base64 PNG, the style inline), so it can
be mailed, archived or opened on a machine with no network. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.report import MAX_ROWS, MAX_VISITS_LISTED, Report
from edge.report.timeline import NO_FACE

# One colour per emotion, the same in every report (tab10, in the labels' canonical order).
COLOURS = {
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#ffbf00",
    "sad": "#1f77b4",
    "surprise": "#17becf",
    "neutral": "#9e9e9e",
    NO_FACE: "#ffffff",
}
MAX_VISIT_ROWS = 40  # rows of the visits chart, the devices (faces) with the most face-time; the title says so


def _colour(label: str) -> str:
    return COLOURS.get(label, "#444444")


def _literal(text: str) -> str:
    """``text`` for matplotlib as it is: an even number of ``$`` would make it mathtext, drawn as a formula or,
    malformed (a device named ``$\\foo{$``), failing the whole figure."""
    return text.replace("$", r"\$")


def _json(data: Any) -> str:
    """JSON that cannot end the ``<script>`` holding it, or open a comment there (``<!--<script``)."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _x(report: Report, values: list[float]) -> list[Any]:
    return [datetime.fromtimestamp(v, timezone.utc) for v in values] if report.wall else values


def figure(report: Report, *, with_table: bool = False) -> Any:
    """The report's figure: shares over time (stacked), each visit's predominant emotion, and for a
    recording each face's scores with the room's mean; ``with_table`` draws the numbers under them."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    labels = report.labels
    line = report.timeline()
    visits = report.visits()
    face_time: dict[str, float] = {}
    for v in visits:
        row = v.group if report.wall else v.visit
        face_time[row] = face_time.get(row, 0.0) + sum(v.seconds.values())
    rows = sorted(heapq.nlargest(MAX_VISIT_ROWS, face_time, key=face_time.__getitem__))
    index = {row: i for i, row in enumerate(rows)}
    faces = report.faces or {}
    table = report.table()
    heights = [3.0, max(1.2, 0.3 * len(rows) + 0.8)]
    if faces:
        heights += [1.1] * len(labels)
    if with_table:
        heights.append(0.35 * (len(table) + 1) + 0.4)
    fig = Figure(figsize=(11, sum(heights) + 0.8), layout="constrained")
    axes = fig.subplots(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0]
    unit = "UTC" if report.wall else "seconds into the recording"

    ax = axes[0]
    ax.set_title(_literal(f"{report.title}: each emotion's share of face-time"))
    # Stacked, stepped per time bin: a bin nobody was in view stays blank instead of being interpolated across.
    x, bottom = _x(report, line["t"]), [0.0] * len(line["t"])
    for label in labels:
        top = [b + s for b, s in zip(bottom, line["share"][label])]
        ax.fill_between(x, bottom, top, step="mid", color=_colour(label), label=_literal(label), linewidth=0)
        bottom = top
    ax.set_ylim(0, 1)
    ax.set_ylabel("share")
    if ax.get_legend_handles_labels()[0]:  # an empty selection has nothing to label
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")

    ax = axes[1]
    shown = f"; the {len(rows)} of {len(face_time)} with the most face-time" if len(rows) < len(face_time) else ""
    ax.set_title(f"predominant emotion per visit ({len(visits)} visits{shown})")
    bars: dict[tuple[int, str], list[tuple[Any, Any]]] = {}  # one collection per row and colour, not per visit
    for v in visits:
        row = v.group if report.wall else v.visit
        if row in index:
            start = _x(report, [v.t0])[0]
            width = (_x(report, [v.t1])[0] - start) if report.wall else v.t1 - v.t0
            bars.setdefault((index[row], _colour(v.predominant)), []).append((start, width))
    for (i, colour), spans in bars.items():
        ax.broken_barh(spans, (i - 0.4, 0.8), color=colour)
    ax.set_yticks(range(len(rows)), [_literal(row) for row in rows], fontsize="small")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    drawn = {v.predominant for v in visits if (v.group if report.wall else v.visit) in index}
    present = [p for p in dict.fromkeys((*labels, NO_FACE)) if p in drawn]
    handles = [Patch(color=_colour(p), label=_literal(p)) for p in present]
    others = len(drawn) - len(present)  # emotions no score names, all in one colour: one entry, however many
    if others:
        handles.append(Patch(color=_colour(""), label=f"other ({others})"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if line["t"]:
        axes[0].sharex(ax)

    for i, label in enumerate(labels if faces else ()):
        ax = axes[2 + i]
        for series in faces.values():
            ax.plot(series["t"], series[label], color=_colour(label), alpha=0.6, linewidth=0.9)
        mean_t, mean = _room_mean(faces, label)
        ax.plot(mean_t, mean, color="black", linewidth=1.6, label="room mean")
        ax.set_ylim(0, 1)
        ax.set_ylabel(_literal(label), fontsize="small")
        if i == 0:
            ax.set_title("each face's score (thin) and the room's mean (black)")
        ax.sharex(axes[0])
    axes[len(axes) - 1 - with_table].set_xlabel(unit)

    if with_table:
        ax = axes[-1]
        ax.axis("off")
        head = [_literal(h) for h in ["", "visits", "face-s", "predominant", *labels]]
        cells = [[_literal(r["name"]), r["visits"], f"{r['face_seconds']:.1f}", _literal(r["predominant"]),
                  *(f"{r['share'][label]:.1%}" for label in labels)] for r in table]  # fmt: skip
        if report.rows_left_out:
            ax.set_title(_left_out(report))
        if cells:
            drawn = ax.table(cellText=cells, colLabels=head, loc="center", cellLoc="right")
            drawn.auto_set_font_size(False)
            drawn.set_fontsize(9)
            drawn.scale(1, 1.3)
    return fig


def _room_mean(faces: dict[int, dict[str, list[float]]], label: str) -> tuple[list[float], list[float]]:
    """Per frame time, the mean of ``label`` over the faces on that frame."""
    sums: dict[float, list[float]] = {}
    for series in faces.values():
        for t, p in zip(series["t"], series[label]):
            acc = sums.setdefault(t, [0.0, 0.0])
            acc[0] += p
            acc[1] += 1
    times = sorted(sums)
    return times, [sums[t][0] / sums[t][1] for t in times]


def _png(report: Report, *, with_table: bool) -> bytes:
    buffer = io.BytesIO()
    figure(report, with_table=with_table).savefig(
        buffer, format="png", dpi=100, metadata={"Description": json.dumps(report.to_dict()["table"])}
    )
    return buffer.getvalue()


def write_png(report: Report, out: Path) -> None:
    out.write_bytes(_png(report, with_table=True))


def _left_out(report: Report) -> str:
    what = f"{report.group_by}s" if report.wall else "faces"
    return (f"{report.rows_left_out} more {what} with less face-time than these {MAX_ROWS} are left out of the "
            "table; overall counts them")  # fmt: skip


def _clock(report: Report, t: float) -> str:
    if report.wall:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{t:.2f} s"


def write_html(report: Report, out: Path) -> None:
    data = report.to_dict()
    labels = report.labels
    esc = html.escape
    picture = base64.b64encode(_png(report, with_table=False)).decode()
    head = "".join(f"<th>{esc(h)}</th>" for h in ["", "visits", "face-seconds", "predominant", *labels])
    rows = [
        f'<tr data-name="{esc(r["name"])}"><th>{esc(r["name"])}</th><td>{r["visits"]}</td>'
        f"<td>{r['face_seconds']:.1f}</td><td>{esc(r['predominant'])}</td>"
        + "".join(f'<td data-share="{r["share"][label]}">{r["share"][label]:.1%}</td>' for label in labels)
        + "</tr>"
        for r in data["table"]
    ]
    # The last row is the totals (timeline.table): a footer by position, as a device may be named "overall" too.
    body, foot = "".join(rows[:-1]), "".join(rows[-1:])
    visits = "".join(
        f"<tr><td>{esc(v['group'])}</td><td>{v['track']}</td><td>{_clock(report, v['t0'])}</td>"
        f"<td>{v['t1'] - v['t0']:.1f}</td><td>{esc(v['predominant'])}</td></tr>"
        for v in data["visits"]
    )
    blob = _json(data)
    title = esc(report.title)
    left_out = f"<p>{esc(_left_out(report))}.</p>" if report.rows_left_out else ""
    total = data["visits_total"]
    listed = f"The latest {MAX_VISITS_LISTED} of {total} visits" if total > MAX_VISITS_LISTED else "Every visit"
    out.write_text(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }}
tfoot {{ font-weight: bold; background: #f4f4f4; }}
img {{ max-width: 100%; }}
details {{ margin: 1rem 0; }}
</style></head><body>
<h1>{title}</h1>
<p>{total} visits; shares are of face-time (two faces for a minute weigh as one face for two).</p>
<img alt="each emotion's share over time, and each visit's predominant emotion" src="data:image/png;base64,{picture}">
<h2>By {esc(report.group_by if report.wall else "face")}</h2>
<table id="numbers"><thead><tr>{head}</tr></thead><tbody>{body}</tbody><tfoot>{foot}</tfoot></table>
{left_out}<details><summary>{listed}</summary>
<table id="visits"><thead><tr><th>device</th><th>track</th><th>from</th><th>seconds</th><th>predominant</th></tr>
</thead><tbody>{visits}</tbody></table></details>
<script type="application/json" id="report-data">{blob}</script>
</body></html>
"""
    )
