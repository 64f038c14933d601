"""Render a run's ``report.html`` with headless Chromium to one full-height PNG, to look at.

    python benchmarks/report/screenshot.py RUN_DIR [--out PNG] [--width 1200] [--timeout 60]

RUN_DIR is a run folder (its ``report.html``, else ``leaderboard.html``; written from the ``.md`` first
when only that exists) or an ``.html`` file. The page is shot in a window taller than its content
(estimated from its text and its embedded images' sizes; doubled until the content ends above the
window's bottom), then the blank bottom is cropped off. Works as root (``--no-sandbox``) and offline
(a throw-away profile; no first-run, sync, extension or component traffic). Default ``--out``:
``report.png`` beside the page. Exit status 1 with one line when no Chromium is installed or it fails.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-sync", "--disable-background-networking",
         "--disable-component-update", "--disable-default-apps", "--mute-audio", "--force-device-scale-factor=1")
MAX_HEIGHT = 32000  # px: Chromium's screenshots fail well beyond this
MARGIN = 32  # px of blank kept under the content


def find_browser() -> str:
    """The path of the first Chromium-like browser on PATH; SystemExit with one line if none."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit(f"screenshot: no Chromium found (looked for {', '.join(BROWSERS)} on PATH); "
             "install it (Debian: apt-get install chromium) and run again")


def page_of(target: Path) -> Path:
    """The HTML page of a run folder (``report.html``, else ``leaderboard.html``) or ``target`` itself;
    written from the Markdown beside it when only that exists."""
    if target.is_file():
        return target
    for stem in ("report", "leaderboard"):
        if (target / f"{stem}.html").is_file():
            return target / f"{stem}.html"
    for stem in ("report", "leaderboard"):
        if (target / f"{stem}.md").is_file():
            from transferkit.report.html import write_html

            return write_html(target / f"{stem}.md")
    sys.exit(f"screenshot: {target} has no report.html, leaderboard.html, report.md or leaderboard.md")


def estimate_height(page: str, width: int) -> int:
    """A window height (px) that should hold the page: ~24 px a text line, plus each embedded image
    scaled to the content width (at most 1036 px, the page's max-width less its padding)."""
    from PIL import Image

    content = min(width, 1100) - 64
    images = 0
    for data in re.findall(r'src="data:image/[a-z+]+;base64,([A-Za-z0-9+/=]+)"', page):
        try:
            w, h = Image.open(io.BytesIO(base64.b64decode(data))).size
        except Exception:  # an SVG or an unreadable image: count a typical plot
            w, h = 4, 3
        images += int(h * min(1.0, content / w)) + 20
    text = re.sub(r"src=\"data:[^\"]*\"", "", page)
    lines = text.count("\n") + len(text) // 120
    return min(MAX_HEIGHT, 400 + 24 * lines + images)


def shoot(browser: str, page: Path, png: Path, width: int, height: int, timeout: float) -> None:
    """One headless Chromium screenshot of ``page`` in a ``width`` x ``height`` window."""
    with tempfile.TemporaryDirectory(prefix="tk-chromium-") as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", page.resolve().as_uri()]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            sys.exit(f"screenshot: {browser} took over {timeout:g} s on {page}; raise --timeout")
    if r.returncode != 0 or not png.is_file():
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        sys.exit(f"screenshot: {browser} failed (exit {r.returncode}): {' | '.join(tail)}")


def content_bottom(png: Path) -> int:
    """The last pixel row that differs from the page's background (its bottom-left pixel)."""
    from PIL import Image, ImageChops

    with Image.open(png) as im:
        rgb = im.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((0, rgb.height - 1)))
    box = ImageChops.difference(rgb, background).getbbox()
    return box[3] if box else 0


def screenshot(target: Path, out: Path | None = None, width: int = 1200, timeout: float = 60) -> Path:
    """Render ``target`` (run folder or page) to a full-height PNG; returns its path."""
    from PIL import Image

    browser = find_browser()
    page = page_of(Path(target))
    out = Path(out) if out else page.with_suffix(".png")
    height = estimate_height(page.read_text(encoding="utf-8"), width)
    while True:
        shoot(browser, page, out, width, height, timeout)
        bottom = content_bottom(out)
        if bottom < height - MARGIN or height >= MAX_HEIGHT:
            break
        height = min(MAX_HEIGHT, 2 * height)
    with Image.open(out) as im:
        im.load()
    im.crop((0, 0, width, min(height, max(bottom + MARGIN, 1)))).save(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", type=Path, help="run folder (report.html / leaderboard.html) or an .html file")
    ap.add_argument("--out", type=Path, help="PNG to write (default: beside the page, .png)")
    ap.add_argument("--width", type=int, default=1200, help="window width in px (default 1200)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds per Chromium run (default 60)")
    a = ap.parse_args(argv)
    png = screenshot(a.target, a.out, a.width, a.timeout)
    from PIL import Image

    with Image.open(png) as im:
        print(f"{png}: {im.width}x{im.height}")


if __name__ == "__main__":
    main()
