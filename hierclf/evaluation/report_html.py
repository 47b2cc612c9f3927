"""``report.html``: the same content as ``report.md`` in one self-contained file (every figure embedded as a
``data:`` URI, no script, no outside reference), readable on a phone and printable, with the primary metric
and every warning on the first screen.

The Markdown the report writes uses a small subset (headings, paragraphs, lists, pipe tables, bold, code,
images, a banner quote, fenced blocks); :func:`markdown_to_html` converts exactly that subset, so the core
install needs no Markdown package.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from hierclf.evaluation.records import SYNTHETIC_BANNER, EvaluationReport

__all__ = ["markdown_to_html", "render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;line-height:1.45;margin:0 auto;
max-width:60rem;padding:0.8rem;color:#111}
h1{font-size:1.4rem}h2{font-size:1.15rem;border-bottom:1px solid #ccc;margin-top:1.6rem}
.first{border:2px solid #b00;border-radius:6px;padding:0.6rem 0.8rem;margin:0.6rem 0}
.first .primary{font-size:1.1rem}.alert,.banner{color:#b00;font-weight:bold}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:0.85rem}
td,th{border:1px solid #ccc;padding:0.2rem 0.4rem;vertical-align:top}
img{max-width:100%;height:auto}code{font-size:0.85em;word-break:break-all}
pre{overflow-x:auto;background:#f6f6f6;padding:0.5rem}
@media print{body{max-width:none}.scroll{overflow:visible}img,table,pre{break-inside:avoid}
h2{break-after:avoid}}
"""


def _inline(text: str) -> str:
    """Escape, then ``**bold**`` and `` `code` ``."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def _image(alt: str, path: str, root: Path | None) -> str:
    """An ``<img>`` whose PNG is embedded (the path relative to ``root``)."""
    source = (root / path) if root is not None else Path(path)
    if source.is_file():
        data = base64.b64encode(source.read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
    return f"<p>[figure {html.escape(alt)} not found]</p>"


_IMAGE = re.compile(r"^\s*!\[([^\]]*)\]\(([^)]+)\)\s*$")


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    head, body = cells[0], cells[2:]
    out = ["<div class='scroll'><table><thead><tr>"]
    out += [f"<th>{_inline(c)}</th>" for c in head] + ["</tr></thead><tbody>"]
    for row in body:
        out += ["<tr>"] + [f"<td>{_inline(c)}</td>" for c in row] + ["</tr>"]
    return "".join(out + ["</tbody></table></div>"])


def _block(lines: list[str], i: int, root: Path | None) -> tuple[str, int]:
    """The HTML of the block starting at line ``i`` and the line after it."""
    line = lines[i]
    if line.startswith("```"):
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        return "<pre>" + html.escape("\n".join(lines[i + 1 : end])) + "</pre>", end + 1
    heading = re.match(r"^(#{1,4}) (.*)$", line)
    if heading:
        level = len(heading.group(1))
        return f"<h{level}>{_inline(heading.group(2))}</h{level}>", i + 1
    image = _IMAGE.match(line)
    if image:
        return _image(image.group(1), image.group(2), root), i + 1
    if line.startswith("> "):
        return f"<p class='banner'>{_inline(line[2:])}</p>", i + 1
    if line.startswith("|"):
        end = next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), len(lines))
        return _table(lines[i:end]), end
    if line.startswith("- "):
        items, j = [], i
        while j < len(lines) and (lines[j].startswith("- ") or lines[j].startswith("  ")):
            image = _IMAGE.match(lines[j])
            items.append(_image(image.group(1), image.group(2), root) if image else _inline(lines[j][2:]))
            j += 1
        return "<ul>" + "".join(f"<li>{x}</li>" for x in items) + "</ul>", j
    end = next(
        (j for j in range(i, len(lines)) if not lines[j].strip() or _starts_block(lines[j])), len(lines)
    )
    end = max(end, i + 1)
    return "<p>" + _inline(" ".join(lines[i:end])) + "</p>", end


def _starts_block(line: str) -> bool:
    return bool(re.match(r"^(#{1,4} |> |\||- |```)", line)) or bool(_IMAGE.match(line))


def markdown_to_html(text: str, root: Path | None = None) -> str:
    """The report's Markdown subset as HTML; images (paths relative to ``root``) embedded.

    Example:
        >>> markdown_to_html("## Task `a`\\n\\n- **b** < c")
        '<h2>Task <code>a</code></h2>\\n<ul><li><strong>b</strong> &lt; c</li></ul>'
        >>> "<td><strong>1</strong></td>" in markdown_to_html("| x |\\n| --- |\\n| **1** |")
        True
    """
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block, i = _block(lines, i, root)
        out.append(block)
    return "\n".join(out)


def _first_screen(report: EvaluationReport, primary_line: str) -> str:
    """The box at the top: the banner, the primary metric with its alerts, and every warning."""
    parts = ["<section class='first' id='first-screen'>"]
    if report.synthetic:
        parts.append(f"<p class='banner'>{html.escape(SYNTHETIC_BANNER)}</p>")
    parts.append(f"<p class='primary' id='primary-metric'>{_inline(primary_line)}</p>")
    if report.alerts:
        parts.append("<p class='alert'>" + " · ".join(html.escape(a) for a in report.alerts) + "</p>")
    if report.warnings:
        parts.append(
            "<ul id='warnings'>" + "".join(f"<li>{_inline(w)}</li>" for w in report.warnings) + "</ul>"
        )
    else:
        parts.append("<p id='warnings'>No warnings.</p>")
    return "".join(parts + ["</section>"])


def render_html(report: EvaluationReport, markdown: str, root: Path | None = None) -> str:
    """``report.html`` from the report and its Markdown (figures relative to ``root`` embedded)."""
    primary = next(
        (line for line in markdown.splitlines() if line.startswith(f"**{report.primary['metric']}**")), ""
    )
    title = html.escape(f"Evaluation report: {report.protocol['name']}")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1>{_first_screen(report, 'Primary metric (pre-registered): ' + primary)}"
        f"{markdown_to_html(_without_title(markdown), root)}</body></html>\n"
    )


def _without_title(markdown: str) -> str:
    lines = markdown.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines)
