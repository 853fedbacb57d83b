"""report.html: the report as one self-contained page an analyst can hand on.

The page is made from the report's own Markdown (so the two never disagree) with its PNG
plots embedded as data: URIs — no network, no files beside it. Only the Markdown the reports
write is understood: headings, paragraphs, pipe tables, bullet lists, images on their own
line, **bold**, *italic* and `code`. Warnings are the report's first paragraphs; here they
are set in a box so they cannot be missed. Deterministic: the same report.md and plots give
the same bytes.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 3px}
.warning{background:#fff4e5;border-left:5px solid #e67e22;padding:.5em .8em;margin:.6em 0}
"""


def _inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", t)
    return t


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(md: str, images: Path, title: str = "report") -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
    ]
    lines = md.split("\n")
    i = 0
    para: list[str] = []

    def flush():
        if para:
            text = " ".join(para)
            cls = ' class="warning"' if text.startswith("**Warning") else ""
            out.append(f"<p{cls}>{_inline(text)}</p>")
            para.clear()

    while i < len(lines):
        ln = lines[i]
        m = re.match(r"^(#{1,4}) (.*)$", ln)
        img = re.match(r"^!\[([^\]]*)\]\(([^)]+)\)\s*$", ln)
        if m:
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif img:
            flush()
            p = images / img.group(2)
            if p.is_file():
                data = base64.b64encode(p.read_bytes()).decode("ascii")
                out.append(
                    f'<p><img alt="{html.escape(img.group(1))}" '
                    f'src="data:image/png;base64,{data}"></p>'
                )
            else:
                out.append(f"<p><em>(plot {html.escape(img.group(2))} not written)</em></p>")
        elif (
            ln.startswith("|") and i + 1 < len(lines) and re.match(r"^\|(-+\|)+\s*$", lines[i + 1])
        ):
            flush()
            head = _cells(ln)
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{_inline(c)}</th>" for c in head)
                + "</tr></thead><tbody>"
            )
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                out.append(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(lines[i])) + "</tr>"
                )
                i += 1
            out.append("</tbody></table>")
            continue
        elif ln.startswith("- "):
            flush()
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
            continue
        elif not ln.strip():
            flush()
        else:
            para.append(ln.strip())
        i += 1
    flush()
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(out: Path, md_name: str = "report.md", html_name: str = "report.html") -> None:
    md = (out / md_name).read_text()
    first = md.split("\n", 1)[0].lstrip("# ").strip()
    (out / html_name).write_text(markdown_to_html(md, out, first or "report"))
