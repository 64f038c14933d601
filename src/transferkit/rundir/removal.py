"""Ownership at any depth: what ``--overwrite`` and an undone run delete. Only files the run's kind
owns, and nested run directories (``compare``'s ``runs/<name>/``) by their own kind; then the owned
folders this leaves empty. Everything else (the user's notes.txt, at any depth) stays."""

from __future__ import annotations

import os
import shutil
from contextlib import suppress
from pathlib import Path

from transferkit.rundir.atomic import TEMP_SUFFIX
from transferkit.rundir.layout import LOCK, MARKER, RunLayout, kind_of_marker


def remove_owned_files(run: RunLayout, tops: list[str], *, files: bool) -> list[str]:
    """The removal: under the top-level names ``tops`` (``""``: all), owned files (with ``files``) and
    nested runs, then owned folders left empty (bottom up). Returns the relative paths removed."""
    kind, removed = run.spec, []
    for root, dirs, names in os.walk(run.path, topdown=True):
        rel_root = Path(root).relative_to(run.path).as_posix()
        for d in list(dirs):
            rel = d if rel_root == "." else f"{rel_root}/{d}"
            if not _under(rel, tops) or os.path.islink(os.path.join(root, d)):
                dirs.remove(d)  # a symlink is listed as a folder: never followed
                names.append(d)
            elif kind.nests_run(rel):
                dirs.remove(d)
                if _remove_nested(Path(root, d), files):
                    removed.append(rel)
        for name in names:
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if files and _under(rel, tops) and kind.owns(rel) and rel not in (MARKER, LOCK):
                _unlink(Path(root, name))
                removed.append(rel)
    _prune(run, tops)
    return removed


def _remove_nested(folder: Path, files: bool) -> bool:
    """A nested run directory (``compare``'s ``runs/<name>/``): its owned files by its own kind, its
    marker and lock; the folder if left empty. False when it is not a transferkit run (kept)."""
    marker = RunLayout(folder).read_marker() if (folder / MARKER).is_file() else None
    if marker is None:
        return False
    if files:
        remove_owned_files(RunLayout(folder, kind=kind_of_marker(marker)), [""], files=True)
        for name in (MARKER, LOCK):
            _unlink(folder / name)
    with suppress(OSError):
        folder.rmdir()
    return True


def _prune(run: RunLayout, tops: list[str]) -> None:
    """Remove the owned folders (on the way to owned files, nested runs) that are empty, deepest first."""
    kind = run.spec
    for root, dirs, _ in os.walk(run.path, topdown=False):
        for d in dirs:
            rel = Path(root, d).relative_to(run.path).as_posix()
            if _under(rel, tops) and (kind.owns_folder(rel) or kind.nests_run(rel)):
                with suppress(OSError):
                    os.rmdir(os.path.join(root, d))  # only an empty folder goes (a symlink: NotADirectory)


def remove_temporary(folder: Path) -> None:
    """Under the lock: temporary files and folders a killed writer left at the top (``atomic_dir``'s)."""
    for entry in folder.iterdir():
        if entry.name.endswith(TEMP_SUFFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _under(rel: str, tops: list[str]) -> bool:
    """Whether relative path ``rel`` lies under one of the top-level names ``tops`` (``""``: anywhere)."""
    return any(not t or rel == t or rel.startswith(t + "/") for t in tops)


def _unlink(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()
