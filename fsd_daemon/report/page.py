"""The report's HTML page: one file, images embedded, nothing fetched from the network."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from fsd_daemon.report.analysis import DEFINITIONS, Analysis
from fsd_daemon.report.figures import FIGURE_SIZES

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1240px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f0f0f0; } td.n { text-align: right; } .missing { color: #b30000; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: 0.8em; }
"""


def _image(directory: Path, name: str, alt: str) -> str:
    data = base64.b64encode((directory / name).read_bytes()).decode()
    width, height = FIGURE_SIZES[name]
    return (
        f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
        f'alt="{html.escape(alt)}">'
    )


def write_page(
    directory: Path, summary: list[str], analysis: Analysis, figures: dict[str, str]
) -> Path:
    """``figures``: PNG file name -> caption, in page order."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>fsd-daemon report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>fsd-daemon report: the long tail and idle rollout GPUs</h1>",
        "<h2>Summary</h2><ul>",
    ]
    for line in summary:
        css = ' class="missing"' if line.startswith("not drawn") else ""
        parts.append(f"<li{css}>{e(line)}</li>")
    parts.append("</ul>")
    for name, caption in figures.items():
        parts.append(f"<h2>{e(caption)}</h2>")
        parts.append(_image(directory, name, caption))
    if analysis.steps:
        parts.append("<h2>Rollout steps</h2><table><tr>")
        for head in (
            "job",
            "step",
            "start (s)",
            "length (s)",
            "median finish (s)",
            "tail (s)",
            "tail share",
            "waiting share",
            "slowest replica",
            "replicas",
        ):
            parts.append(f"<th>{e(head)}</th>")
        parts.append("</tr>")
        t0 = analysis.steps[0].start
        for s in analysis.steps:
            cells = (
                s.job,
                str(s.index + 1),
                f"{s.start - t0:.0f}",
                f"{s.seconds:.1f}",
                f"{s.median_finish - s.start:.1f}",
                f"{s.tail_seconds:.1f}",
                f"{s.tail_share:.0%}",
                f"{s.waiting_share:.0%}",
                s.slowest,
                str(len(s.finishes)),
            )
            parts.append("<tr>" + "".join(f'<td class="n">{e(c)}</td>' for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append(f"<h2>Definitions</h2><pre>{e(DEFINITIONS.strip())}</pre>")
    parts.append("</body></html>")
    path = directory / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
