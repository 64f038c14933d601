"""What a run may not use, refused in one line before anything is touched: ``RunDir.check``'s rules,
and output never the input (``--out`` may not be, or lie inside, a data folder). Nothing here writes."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from transferkit.errors import RunDirError
from transferkit.rundir.layout import MARKER, RunLayout


def check_output_not_input(out: Path | str, inputs: Iterable[Path | str], *, overwrite: bool = False) -> None:
    """Refuse an ``out`` that would write into, or delete, the data.

    An input folder counts with everything under it; an input file (a CSV, an IDX
    file) counts as itself: it names its images, and a run folder beside it changes
    nothing it reads (pass the image root as an input too when it matters).
    ``out`` is refused when it is an input, or lies inside an input folder (its
    files would be read as data next time), and, with ``overwrite``, when it
    contains an input. Symlinks are resolved first. Creates nothing.
    """
    o = Path(out).resolve()
    for given in inputs:
        i = Path(given).resolve()
        if o == i or (i.is_dir() and i in o.parents):
            raise RunDirError(f"--out {out} is the input {given} or lies inside it; the run would write into "
                              "the data; choose an --out outside it")
        if overwrite and o in i.parents:
            raise RunDirError(f"--out {out} contains the input {given}; --overwrite must not reach the data; "
                              "choose another --out")


def check_folder_writable(path: Path) -> None:
    """One line when ``path`` cannot be a folder this process creates and writes in."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path} is a file, not a folder; choose another --out")
    full = path.absolute()
    existing = next(p for p in (full, *full.parents) if p.exists())
    if not existing.is_dir():
        raise RunDirError(f"cannot create {path}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write in {existing} (read-only or no permission); choose another --out")


def check_run(run: RunLayout, *, overwrite: bool, resume: bool, inputs: Iterable[Path | str],
              parts: Iterable[str] | None) -> None:
    """``RunDir.check``'s rules (its docstring lists them), on rank zero."""
    if overwrite and resume:
        raise RunDirError("--overwrite and --resume exclude each other; pass one of them")
    parts = parts_of(run, parts)
    check_folder_writable(run.path)
    check_output_not_input(run.path, inputs, overwrite=overwrite)
    entries = run.entries()
    if resume:
        check_resumable(run, entries)
    elif entries:
        check_kind(run, run.read_marker(), entries)
        if not overwrite:
            check_new(run, entries, parts)


def parts_of(run: RunLayout, parts: Iterable[str] | None) -> list[str] | None:
    """``parts`` as a list: required by, and only by, a kind of parts, each a name the kind owns."""
    if run.spec.parts != (parts is not None):
        raise ValueError(f"a {run.kind} run directory {'needs' if parts is None else 'takes no'} parts")
    if parts is not None and not all(run.spec.owns_folder(p) for p in parts):
        raise ValueError(f"{parts} are not all folders a {run.kind} run directory owns")
    return None if parts is None else list(parts)


def check_new(run: RunLayout, entries: list[str], parts: list[str] | None) -> None:
    """Without ``--overwrite``: nothing of a run there yet (a kind of parts: none of ``parts``)."""
    if parts is not None:
        taken = [p for p in parts if p in entries]
        if taken:
            raise RunDirError(f"{run.path / taken[0]} exists; pass --overwrite to replace it (only the files "
                              "transferkit wrote there) or choose another --out")
    elif entries != [MARKER]:
        resumable = " or --resume to continue it" if run.spec.resume_needs else ""
        raise RunDirError(f"run directory {run.path} already exists; pass --overwrite to replace it{resumable}")


def check_kind(run: RunLayout, marker: dict | None, entries: list[str]) -> None:
    """A non-empty folder must carry a marker of the run's own kind."""
    if marker is None:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunDirError(f"{run.path} is not a transferkit run directory (it holds {shown}); "
                          "choose another --out")
    if marker["kind"] != run.kind:
        raise RunDirError(f"{run.path} is a transferkit {marker['kind']} directory, not a {run.kind} one; "
                          "choose another --out")


def check_resumable(run: RunLayout, entries: list[str]) -> None:
    """``--resume``: a started run of this kind with its ``resume_needs`` file (or such a pre-marker run)."""
    need = run.spec.resume_needs
    has_need = need is None or (run.path / need).is_file()
    if not entries:
        raise RunDirError(f"cannot resume: {run.path} holds no run; start a new run without --resume")
    marker = run.read_marker()
    legacy = marker is None and need is not None and has_need and all(run.owns(e) for e in entries)
    if not legacy:
        check_kind(run, marker, entries)
    if not has_need:
        raise RunDirError(f"cannot resume: {run.path} has no {need}; start a new run without --resume")
