"""``report.html``: the Markdown report as one self-contained page that opens from the file system.

Every image the report links is embedded as a ``data:`` URI (its MIME type from the file name), so
the page can be mailed or moved alone; a missing image becomes a visible ``missing: name`` note. The
style sheet is inline; the page has no scripts, no fonts and no reference to the network (a
Content-Security-Policy that allows only ``data:`` images and the inline style says so to the
browser too). Links to other files of the run stay relative (a ``.md`` one points at its ``.html``
when that exists); a link to a web address is shown as text.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path
from urllib.parse import unquote

from transferkit.rundir import atomic_write, is_global_zero

#: a link target that names a scheme (``http:``, ``data:``, ``file:``) or a host (``//host/x``): not a file of the run
EXTERNAL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)")

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 1.7em; border-bottom: 2px solid #d0d7de; padding-bottom: .3em; margin-top: 0; }
h2 { font-size: 1.3em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
a { color: #0969da; }
table { border-collapse: collapse; margin: 12px 0; font-size: 14px; display: block; overflow-x: auto;
        max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eaeef2; font-weight: 600; }
tbody tr:nth-child(even) { background: #f6f8fa; }
td { font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; border: 1px solid #eaeef2; }
code { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; background: #f0f2f4;
       padding: .1em .3em; border-radius: 4px; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 12px 16px; overflow-x: auto; }
pre code { background: none; padding: 0; }
blockquote { margin: 12px 0; padding: 6px 16px; border-left: 4px solid #bf8700; background: #fff8c5; }
.missing { display: inline-block; padding: 4px 10px; border: 1px dashed #cf222e; color: #cf222e;
           background: #ffebe9; font-size: 14px; }
"""


def _note(text: str) -> str:
    """A visible note in place of an image that cannot be embedded."""
    return f'<span class="missing">{html.escape(text)}</span>'


def embed_image(src: str, base: Path) -> tuple[str | None, str | None]:
    """``(data URI, None)`` for an image file ``src`` (relative to ``base``), else ``(None, why)``."""
    if src.startswith("data:"):
        return src, None
    if EXTERNAL.match(src):
        return None, f"not embedded (not a file of the run): {src}"
    name = unquote(src)
    path = base / name
    mime = mimetypes.guess_type(name)[0]
    if not path.is_file():
        return None, f"missing: {name}"
    if not mime or not mime.startswith("image/"):
        return None, f"not an image: {name}"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}", None


def _local_link(href: str, base: Path) -> str | None:
    """A relative link kept as it is (``x.md`` -> ``x.html`` when that page exists); None for a web address."""
    if EXTERNAL.match(href) and not href.startswith("mailto:"):
        return None
    path, _, anchor = href.partition("#")
    if path.endswith(".md") and (base / unquote(path)).with_suffix(".html").is_file():
        path = path[:-3] + ".html"
    return path + (f"#{anchor}" if anchor else "")


def _rewrite_inline(children: list, base: Path) -> None:
    """Embed the images of one inline run and turn links to the network into text, in place."""
    links = []  # per open link: its web address when turned to text, else None
    for tok in children:
        if tok.type == "image":
            uri, why = embed_image(tok.attrGet("src") or "", base)
            if uri is None:
                tok.type, tok.content = "html_inline", _note(why)
            else:
                tok.attrSet("src", uri)
        elif tok.type == "link_open":
            href = _local_link(tok.attrGet("href") or "", base)
            shown = href is None and tok.markup != "autolink"  # an autolink's text is its address already
            links.append(tok.attrGet("href") if shown else None)
            if href is None:
                tok.type, tok.content = "html_inline", ""
            else:
                tok.attrSet("href", href)
        elif tok.type == "link_close" and links:
            web = links.pop()
            if web is not None:
                tok.type, tok.content = "html_inline", f" ({html.escape(web)})"


def markdown_to_html(text: str, base: Path, title: str) -> str:
    """The Markdown ``text`` (CommonMark and tables; raw HTML in it is escaped) as a whole HTML page;
    images relative to ``base`` embedded (:func:`embed_image`)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for tok in tokens:
        if tok.type == "inline" and tok.children:
            _rewrite_inline(tok.children, Path(base))
    body = md.renderer.render(tokens, md.options, {})
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n")


def title_of(text: str, default: str) -> str:
    """The first level-one heading of the Markdown ``text``, else ``default``."""
    heading = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")
    return heading or default


def write_html(report_md: Path) -> Path:
    """Write ``<name>.html`` beside the Markdown file ``report_md`` (atomically; rank zero only)."""
    report_md = Path(report_md)
    out = report_md.with_suffix(".html")
    if not is_global_zero():
        return out
    text = report_md.read_text(encoding="utf-8")
    page = markdown_to_html(text, report_md.parent, title_of(text, report_md.stem))
    return atomic_write(out, lambda p: p.write_text(page, encoding="utf-8"))
