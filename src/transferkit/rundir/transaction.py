"""The run directory taken as a transaction: ``RunDir.check`` (refuse, change nothing), then
``RunDir.open`` (create, lock, check again, clean, sign; at the end keep or undo), and
``RunDir.locked`` to add files to a finished run (``export``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path

from transferkit import __version__
from transferkit.errors import Interrupted, RunDirError
from transferkit.rundir import logs as lightning_logs
from transferkit.rundir.atomic import TEMP_SUFFIX, write_json
from transferkit.rundir.checks import check_run, parts_of
from transferkit.rundir.layout import LOCK, MARKER, RunKind, RunLayout
from transferkit.rundir.lock import RunLock
from transferkit.rundir.ranks import is_global_zero
from transferkit.rundir.removal import remove_owned_files, remove_temporary


class RunDir(RunLayout):
    """Paths of one run directory, and the way to take it: ``check`` then ``open``.

    ::

        run = RunDir(out, kind=FINETUNE_RUN)                  # or a declared kind's name
        run.check(overwrite=..., resume=..., inputs=[data])   # no side effects
        with run.open(overwrite=..., resume=..., inputs=[data]) as run:
            ...                                               # write the run's files
    """

    def __init__(self, path: Path | str, kind: RunKind | str = "finetune"):
        super().__init__(path, kind)
        self.writer = is_global_zero()  # False on other ranks: they write nothing
        self._lock = RunLock(self.path)

    # ------------------------------------------------------------------------- check
    def check(self, *, overwrite: bool = False, resume: bool = False, inputs: Iterable[Path | str] = (),
              parts: Iterable[str] | None = None) -> RunDir:
        """Refuse, with one line, a folder this run must not use; changes nothing.

        Refused: a path that is a file or cannot be created or written; an ``out``
        that is or lies inside an input (see ``check_output_not_input``); a non-empty
        folder without the marker, or with another kind's marker; a run holding
        results unless ``overwrite`` or ``resume`` (a kind of ``parts``: one of the
        ``parts`` this run writes); ``resume`` of anything but a started run of this
        kind (a pre-marker run whose entries are all owned names and which has its
        ``resume_needs`` file is accepted too).
        On ranks other than global zero nothing is checked: rank zero did.
        """
        if self.writer:
            check_run(self, overwrite=overwrite, resume=resume, inputs=inputs, parts=parts)
        return self

    # ------------------------------------------------------------------------- open
    @contextmanager
    def open(self, *, overwrite: bool = False, resume: bool = False, command: list[str] | None = None,
             inputs: Iterable[Path | str] = (), parts: Iterable[str] | None = None) -> Iterator[RunDir]:
        """Take the run directory for the ``with`` block; yields ``self``.

        In order: ``check`` (no side effects) -> create the folder -> take the lock
        (refused at once, naming the holder, if another process has it) -> ``check``
        again under the lock (a run may have finished meanwhile) -> remove temporary
        files a killed writer left -> with ``overwrite``, remove the owned files (a
        kind of parts: those of ``parts``) -> write the marker (``command``, default
        ``sys.argv``; a resume, or a run adding parts, keeps the one there). The lock
        is held until the block ends. If the start fails, what this call created is
        removed again. If the block raises (or is interrupted), a run worth keeping
        (``RunKind.keep``; a resume always) is kept, and an interrupt says what it holds;
        any other is undone: the files it wrote, the marker and the folders it made
        go, so the same command starts again (and an interrupt says so). On ranks
        other than global zero nothing happens and ``writer`` is False.
        """
        if not self.writer:
            yield self
            return
        inputs, command = list(inputs), [str(c) for c in (sys.argv if command is None else command)]
        parts = parts_of(self, parts)
        self.check(overwrite=overwrite, resume=resume, inputs=inputs, parts=parts)
        made, had_marker, had_lock = self._start(command, overwrite=overwrite, resume=resume, inputs=inputs,
                                                 parts=parts)
        try:
            yield self
        except BaseException as e:
            if resume or self._worth_keeping():
                self._say_kept(e, parts)
            else:
                self._undo(made, had_marker, had_lock, written=parts or [""])
                self._say_undone(e, made)
            raise
        finally:
            self._lock.release()

    def _start(self, command: list[str], *, overwrite: bool, resume: bool, inputs: list[Path | str],
               parts: list[str] | None) -> tuple[list[Path], bool, bool]:
        """``open``'s start, undone if it fails. Returns what ``_undo`` needs later: the folders made,
        whether the marker and the lock file were there before."""
        made: list[Path] = []
        had_marker = had_lock = True
        try:
            made = _make_folder(self.path)
            had_lock = self.lock_file.exists()
            self._lock.acquire(command)
            had_marker = self.marker.exists()
            self.check(overwrite=overwrite, resume=resume, inputs=inputs, parts=parts)
            remove_temporary(self.path)
            if overwrite:
                self.remove_owned(parts)
            if not had_marker or not (resume or parts is not None):  # a new run (or an adopted pre-marker
                write_json(self.marker, self._marker_content(command))  # one) signs; parts keep the first
        except OSError as e:
            self._undo(made, had_marker, had_lock)
            raise RunDirError(f"cannot set up run directory {self.path}: {e.strerror}; "
                              "choose another --out") from e
        except BaseException:
            self._undo(made, had_marker, had_lock)
            raise
        return made, had_marker, had_lock

    def _marker_content(self, command: list[str]) -> dict:
        return {"kind": self.kind, "transferkit": __version__, "command": command,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "owned": list(self.spec.owned)}

    # ------------------------------------------------------------------------- lock
    @contextmanager
    def locked(self, command: list[str] | None = None) -> Iterator[RunDir]:
        """Hold the run's lock for the ``with`` block, to add files to a finished run (``export``):
        refused at once, naming the holder, while another process has it, and in one line when the
        folder is not writable (``check_writable``)."""
        self.check_writable()
        try:
            self._lock.acquire(command if command is not None else sys.argv)
        except OSError as e:  # not writable after all (a file system access() cannot see through)
            raise RunDirError(f"cannot lock run directory {self.path}: {e.strerror or e}; copy the run to a "
                              "writable folder and use the copy") from None
        try:
            yield self
        finally:
            self._lock.release()

    def check_writable(self) -> None:
        """One line when this process cannot add files to the run's folder: a read-only file system, no
        permission, an immutable folder (``access(2)`` sees all three, for root too)."""
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RunDirError(f"run directory {self.path} is not writable (read-only file system or no "
                              "permission); copy the run to a writable folder and use the copy")

    def holder(self, wait: float = 2.0) -> str:
        """Who holds the lock, as it wrote into it: 'pid N on host H (command)' (``RunLock.holder``)."""
        return self._lock.holder(wait)

    # ------------------------------------------------------------------------- failure
    def _holds_value(self) -> bool:
        """Whether the folder holds a file other than the marker, the lock and temporary files."""
        return any(p.is_file() or p.is_symlink() for p in self.path.rglob("*")
                   if p.name not in (MARKER, LOCK) and not p.name.endswith(TEMP_SUFFIX))

    def _worth_keeping(self) -> bool:
        """Whether a failed run leaves something to keep: its result, or a path its kind's ``keep`` names."""
        keep = self.spec.keep
        if keep is None:
            return self._holds_value()
        if self.is_complete:
            return True
        return any(fnmatchcase(p.relative_to(self.path).as_posix(), k) for p in self.path.rglob("*") for k in keep)

    def _say_kept(self, e: BaseException, parts: list[str] | None) -> None:
        """On an interrupt that no inner layer explained: what the kept folder holds."""
        if not isinstance(e, Interrupted) or e.where:
            return
        if parts is None:
            e.where = f"kept the unfinished run in {self.path} ({', '.join(self.entries())})"
            return
        done = [p for p in parts if (self.path / p).is_dir()]
        missing = [p for p in parts if p not in done]
        e.where = (f"finished in {self.path}: {', '.join(done)}; not written: {', '.join(missing) or '-'}"
                   " (no partial folder is left)")

    def _say_undone(self, e: BaseException, made: list[Path]) -> None:
        if isinstance(e, Interrupted):
            e.where = (f"the unfinished {self.kind} run was undone ({self.path} "
                       f"{'removed' if made and not self.path.exists() else 'is as it was before'}); "
                       "the same command starts it again")

    def _undo(self, made: list[Path], had_marker: bool, had_lock: bool, written: list[str] | None = None) -> None:
        """Remove what a failed start created: marker, lock, empty owned folders, the folders made; with
        ``written`` (top-level names; ``""``: all), the owned files the run wrote there too.

        Only the lock's holder touches the folder's content (another process may be
        starting in it); the folders this call made go only if they are empty.
        """
        if self._lock.held:
            if not had_marker:
                with suppress(OSError):
                    self.marker.unlink(missing_ok=True)
            remove_owned_files(self, written or [""], files=written is not None)
            if not had_lock:
                with suppress(OSError):  # unlinked while held: a waiter then retries on a new file
                    self.lock_file.unlink(missing_ok=True)
            self._lock.release()
        for d in reversed(made):
            with suppress(OSError):
                d.rmdir()

    def remove_owned(self, parts: Iterable[str] | None = None) -> list[str]:
        """Delete the files this kind owns (the marker and lock aside), and nested runs (``runs/*/``) by
        their own kind; then the owned folders this leaves empty. Everything else stays, at any depth.

        ``parts``: only under these top-level names. Only global rank zero deletes, and only in a folder
        marked with this kind. Returns the relative paths removed.
        """
        if not is_global_zero() or (self.read_marker() or {}).get("kind") != self.kind:
            return []
        return remove_owned_files(self, [""] if parts is None else list(parts), files=True)

    # ------------------------------------------------------------------------- logs
    def next_attempt(self) -> str:
        """The name of the next attempt's Lightning log folder under ``logs/`` (``logs.next_attempt``)."""
        return lightning_logs.next_attempt(self.logs, self.writer)

    def merge_logs(self) -> list[dict]:
        """Merge every attempt's CSV log into ``metrics.csv`` (``logs.merge_logs``)."""
        return lightning_logs.merge_logs(self.logs, self.metrics_csv)


def _make_folder(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the folders this call created, outermost first."""
    missing, p = [], path.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    made = []
    for d in reversed(missing):
        try:
            d.mkdir()
            made.append(d)
        except FileExistsError:  # another process made it meanwhile: not ours to remove
            pass
    return made
