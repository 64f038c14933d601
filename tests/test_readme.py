"""The README's links lead somewhere: every relative link names a file of the repository, and every
``#anchor`` into ``benchmarks/RESULTS.md`` or into the README itself exists there."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """Explicit ``<a id="...">`` anchors and GitHub's heading anchors (lower case, punctuation dropped,
    spaces as hyphens)."""
    ids = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        ids.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return ids


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    links = [link for link in LINK.findall(readme) if not link.startswith(("http://", "https://"))]
    assert len(links) > 10
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), f"README links to a missing file: {link}"
        if anchor:
            assert anchor in anchors(target.read_text()), f"README links to a missing anchor: {link}"
