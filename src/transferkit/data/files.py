"""Which files are images, and how to name any file readably.

One filter for every scan (training folders, ``predict``, ``rank``): a file is
an image when its suffix is an image suffix and it is a regular file (or a
link to one), and neither it nor a folder above it (below the scanned folder)
is junk: hidden (``.x``, which includes AppleDouble ``._x`` and
``.ipynb_checkpoints/``) or ``__MACOSX/``. Folders are searched recursively in
sorted order; links to folders below the scanned folder are not followed (no
loops), the scanned folder itself may be a link. A class folder may be a link
to a folder elsewhere, but never one that leads back into the data root, to
the root itself or to a folder holding it (``ln -s . loop``): its images would
be read twice, or forever, as another class.

File names are bytes on Linux; Python decodes the ones that are not UTF-8
with surrogate escapes (``b"caf\\xe9"`` -> ``"caf\\udce9"``), which open fine
but cannot be printed or UTF-8 encoded. :func:`display_name` turns any name
into a printable str: each undecodable byte becomes ``\\xNN`` and control
characters are escaped (``\\n``), so a name never breaks a one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from transferkit.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
JUNK_FOLDERS = frozenset({"__MACOSX"})


def is_junk(name: str) -> bool:
    """True for names every scan skips: hidden (``.x``, ``._x``, ``.ipynb_checkpoints``) and ``__MACOSX``."""
    return name.startswith(".") or name in JUNK_FOLDERS


def is_image_file(path: Path | str) -> bool:
    """An image suffix, not junk, and a regular file (or a link to one)."""
    path = Path(path)
    return not is_junk(path.name) and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def iter_image_files(folder: Path | str) -> Iterator[Path]:
    """The image files under ``folder``, recursively, in sorted path order, junk folders pruned."""
    for entry in _listing(Path(folder)):
        if is_junk(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            yield from iter_image_files(entry)
        elif is_image_file(entry):
            yield entry


def subfolders(folder: Path | str, root: Path | str | None = None) -> list[Path]:
    """The non-junk sub-folders of ``folder`` (links to folders included, but not those leading back into
    ``root``, default ``folder``: see :func:`loops_back`), sorted by name."""
    top = Path(root or folder).resolve()
    return [d for d in _listing(Path(folder)) if d.is_dir() and not is_junk(d.name) and not loops_back(d, top)]


def loops_back(entry: Path, root: Path) -> bool:
    """Whether ``entry`` is a link to ``root`` (resolved), to a folder inside it or to a folder holding it:
    following it would read ``root``'s images again, or without end."""
    if not entry.is_symlink():
        return False
    try:
        target = entry.resolve(strict=True)
    except (OSError, RuntimeError):  # a cycle of links (ELOOP), or one that vanished meanwhile
        return True
    return target == root or root in target.parents or target in root.parents


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise DataError(f"cannot list folder {quoted(folder)} ({e.strerror or e}); check it exists and is readable") from None


def display_name(name: str | bytes | os.PathLike) -> str:
    """A printable, UTF-8-encodable form of a file name or path: undecodable bytes
    as ``\\xNN``, control and other unprintable characters escaped as ``repr`` does.
    Equal to ``str(name)`` for ordinary names."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    if text.isprintable():
        return text
    out = []
    for c in text:
        if "\udc80" <= c <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(c if c.isprintable() else repr(c)[1:-1])
    return "".join(out)


def quoted(path: str | bytes | os.PathLike) -> str:
    """``display_name`` in single quotes, for messages."""
    return f"'{display_name(path)}'"
