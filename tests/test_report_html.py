"""report.html: the Markdown report as one self-contained page (images embedded, nothing fetched), checked
by parsing the HTML, and (when Chromium is installed) by rendering it to a PNG."""

import base64
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from transferkit.report import html as html_mod
from transferkit.report import write_report
from transferkit.report.compare import write_leaderboard
from transferkit.report.html import markdown_to_html, write_html

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "report" / "screenshot.py"
SRC = str(Path(__file__).resolve().parents[1] / "src")
RED = (255, 0, 0)


class Page(HTMLParser):
    """Every tag with its attributes, and the visible text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def attrs(self, tag: str, name: str) -> list[str]:
        return [a[name] for t, a in self.tags if t == tag and name in a]


def red_png(path: Path, size=(40, 30)) -> Path:
    Image.new("RGB", size, RED).save(path)
    return path


def assert_self_contained(page: Page) -> None:
    """No script, no style sheet or other resource linked, no src/href that reaches the network."""
    names = {t for t, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}
    for _, attrs in page.tags:
        for key in ("src", "href", "srcset", "action"):
            value = attrs.get(key, "")
            assert not value.startswith(("http:", "https:", "//", "file:")), (key, value)
    assert all(src.startswith("data:") for src in page.attrs("img", "src"))


def test_report_html_embeds_each_png_byte_for_byte(tmp_path):
    png = red_png(tmp_path / "learning_curve.png")
    (tmp_path / "plots").mkdir()
    sub = red_png(tmp_path / "plots" / "my plot.png", (8, 8))  # a space: linked URL-encoded
    md = write_report(tmp_path / "report.md", {"epochs": 1}, {"model": "m", "strategy": "full", "test_accuracy": 0.5},
                      {"Learning curve": png.name, "Sub": sub})
    assert md == tmp_path / "report.md" and "](plots/my%20plot.png)" in md.read_text()
    page = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    srcs = page.attrs("img", "src")
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert [base64.b64decode(s.split(",", 1)[1]) for s in srcs] == [png.read_bytes(), sub.read_bytes()]
    assert page.attrs("img", "alt") == ["Learning curve", "Sub"]
    assert_self_contained(page)


def test_tables_code_and_quotes_render_as_html(tmp_path):
    write_report(tmp_path / "report.md", {"lr": 0.01}, {"model": "m", "strategy": "full", "test_accuracy": 0.25,
                                                        "baseline_verdict": "baseline wins"}, {})
    page = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    tags = [t for t, _ in page.tags]
    assert tags.count("table") == 1 and tags.count("th") == 2 and "blockquote" in tags and "pre" in tags
    text = "".join(page.text)
    assert "test_accuracy0.2500" in text.replace("\n", "") and "lr: 0.01" in text
    assert text.count("transferkit run: m / full") == 2  # the <title> and the <h1>


def test_missing_image_is_a_visible_note(tmp_path):
    out = markdown_to_html("# R\n\n![curve](gone.png)\n", tmp_path, "R")
    page = Page(out)
    assert page.attrs("img", "src") == []
    assert "missing: gone.png" in "".join(page.text)
    assert ("span", {"class": "missing"}) in page.tags


def test_svg_and_jpeg_get_their_mime_types(tmp_path):
    (tmp_path / "a.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="2" height="2"/>')
    Image.new("RGB", (3, 3), RED).save(tmp_path / "b.jpg")
    srcs = Page(markdown_to_html("![a](a.svg) ![b](b.jpg)", tmp_path, "t")).attrs("img", "src")
    assert [s.split(",")[0] for s in srcs] == ["data:image/svg+xml;base64", "data:image/jpeg;base64"]
    assert base64.b64decode(srcs[1].split(",", 1)[1]) == (tmp_path / "b.jpg").read_bytes()


def test_network_references_and_raw_html_never_reach_the_page(tmp_path):
    text = ("# T\n\n![remote](https://example.com/x.png) ![proto](//example.com/y.png)\n\n"
            "[site](https://example.com/docs) <http://example.org> [run](runs/a/report.md)\n\n"
            "class <script>alert(1)</script> <link rel=stylesheet href=http://x/s.css>\n")
    page = Page(markdown_to_html(text, tmp_path, "T"))
    assert_self_contained(page)
    shown = "".join(page.text)
    assert "site (https://example.com/docs)" in shown and "http://example.org" in shown
    assert "<script>alert(1)</script>" in shown  # escaped: text, not a tag
    assert "not embedded (not a file of the run): https://example.com/x.png" in shown
    assert page.attrs("a", "href") == ["runs/a/report.md"]  # a file of the run stays a relative link


def test_link_to_a_markdown_report_points_at_its_page_when_written(tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "report.html").write_text("<p>a</p>")
    page = Page(markdown_to_html("[a](runs/a/report.md#metrics) [b](runs/b/report.md)", tmp_path, "t"))
    assert page.attrs("a", "href") == ["runs/a/report.html#metrics", "runs/b/report.md"]


def test_leaderboard_and_tta_reports_get_their_page(tmp_path):
    chart = red_png(tmp_path / "compare.png")
    board = [{"strategy": "full", "runs": 1, "val_accuracy_mean": 0.9, "val_accuracy_std": 0.0,
              "test_accuracy_mean": 0.8, "test_accuracy_std": 0.0, "train_seconds_mean": 3.0,
              "trainable_params": 10, "total_params": 10, "image_size": 32, "epochs": 1, "forgetting": None}]
    write_leaderboard(tmp_path / "leaderboard.md", {"data": "d", "model": "m", "per_class": 5, "seeds": [0],
                                                    "leaderboard": board, "recommendation": "full."}, chart.name)
    page = Page((tmp_path / "leaderboard.html").read_text(encoding="utf-8"))
    assert base64.b64decode(page.attrs("img", "src")[0].split(",", 1)[1]) == chart.read_bytes()
    assert "transferkit compare: d (m)" in "".join(page.text)
    assert_self_contained(page)


def test_write_html_is_rank_zero_only(tmp_path, monkeypatch):
    monkeypatch.setattr(html_mod, "is_global_zero", lambda: False)
    assert write_html(tmp_path / "report.md") == tmp_path / "report.html"  # no report.md on this rank: no read
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_chromium_renders_the_page_with_its_embedded_image(tmp_path):
    """The screenshot script renders report.html to one PNG: the embedded 40x30 red image shows as exactly
    its 1200 red pixels (drawn at its size: no scaling at 1 px per CSS px), the page has dark text, and
    the blank bottom is cropped off."""
    red_png(tmp_path / "red.png")
    (tmp_path / "report.md").write_text("# A red square\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![red](red.png)\n")
    write_html(tmp_path / "report.md")
    (tmp_path / "red.png").unlink()  # the page must not need it
    out = tmp_path / "shot.png"
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--out", str(out), "--width", "800"],
                       capture_output=True, text=True, timeout=120, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        rgb = im.convert("RGB")
    colors = rgb.getcolors(maxcolors=1 << 20)
    assert rgb.width == 800 and 150 < rgb.height < 1000
    assert dict((c, n) for n, c in colors).get(RED) == 40 * 30
    assert sum(n for n, (r_, g, b) in colors if r_ + g + b < 150) > 100  # the heading's and table's text
