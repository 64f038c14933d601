"""The run directory: one folder per run, readable by people and programs.

::

    runs/<name>/
      transferkit.json   ownership marker: kind, transferkit version, command, created (UTC)
      .lock              locked by the one process writing the run (its pid, host, command)
      config.yaml        the FinetuneConfig that made the run
      metrics.json       final metrics (model, strategy, accuracies, timings, ...)
      metrics.csv        per-epoch training log (merged across resumed attempts)
      model.safetensors  final weights (whole timm model, new head included)
      model.json         how to rebuild the model and preprocess inputs
      report.md          config, metrics and PNG plots
      checkpoints/       Lightning checkpoints for --resume
      logs/attempt_N/    raw CSV logs of each (possibly interrupted) attempt
      adapter/           the LoRA adapter (PEFT format), for --strategy lora

The rules:

* **Owned.** transferkit deletes only inside a folder carrying ``transferkit.json``,
  and there only the top-level names its kind owns (``RunDir.KINDS``); anything
  else (the user's notes.txt) stays. A non-empty folder without the marker is
  never used.
* **One writer.** The process that opens a run holds an exclusive OS lock on
  ``.lock`` until it is done; a second process is refused with the holder's pid,
  host and command. The OS drops the lock when the holder dies, even by kill -9.
* **Rank zero.** Only global rank zero creates, writes or deletes; other ranks
  only train (``check``, ``open`` and ``atomic_write`` do nothing there).
* **Atomic.** Every file is written to a hidden temporary name next to it, then
  moved into place with ``os.replace``; it gets the mode a plain ``open`` gives.
* **Output never the input.** ``--out`` may not be, or lie inside, a data folder.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import secrets
import shlex
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from transferkit import __version__
from transferkit.errors import Interrupted, IOFault, RunDirError

if TYPE_CHECKING:
    import torch

MARKER = "transferkit.json"
LOCK = ".lock"
TEMP_SUFFIX = ".tktmp"
#: Owned by every kind: the marker, the lock and temporary files (at any depth) left by a killed writer.
COMMON_OWNED = (MARKER, LOCK, f".*{TEMP_SUFFIX}", f"*/.*{TEMP_SUFFIX}")
#: OS errors that are faults of the disk or its permissions, not of transferkit.
IO_FAULTS = {errno.ENOSPC: "free some space or choose another --out",
             errno.EDQUOT: "free some space or choose another --out",
             errno.EFBIG: "choose another --out",
             errno.EROFS: "choose a writable --out",
             errno.EACCES: "choose a writable --out",
             errno.EPERM: "choose a writable --out",
             errno.EIO: "check the disk"}


# ----------------------------------------------------------------------------- ranks
def global_rank() -> int:
    """This process's global rank, read from the environment its launcher set.

    ``RANK`` (torchrun, DeepSpeed, Kubeflow) when set. Else Lightning's launcher
    (and torchelastic's) ``LOCAL_RANK`` on node ``NODE_RANK`` (or ``GROUP_RANK``):
    ``node * LOCAL_WORLD_SIZE + local``; without ``LOCAL_WORLD_SIZE`` the per-node
    count is taken as 1, so the number is a stand-in, but it is zero exactly on
    node 0's first process. Else ``SLURM_PROCID`` or ``JSM_NAMESPACE_RANK`` (srun,
    jsrun tasks). Else 0: a process nobody launched.
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if {"LOCAL_RANK", "NODE_RANK", "GROUP_RANK"} & env.keys():
        node = int(env.get("NODE_RANK", env.get("GROUP_RANK", 0)))
        return node * int(env.get("LOCAL_WORLD_SIZE", 1)) + int(env.get("LOCAL_RANK", 0))
    for key in ("SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in env:
            return int(env[key])
    return 0


def is_global_zero() -> bool:
    """Whether this process may touch run directories: only global rank zero does."""
    return global_rank() == 0


# ----------------------------------------------------------------------------- files
def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)``, then move ``tmp`` onto ``path`` with ``os.replace``.

    ``tmp`` is ``.<name>.<random>.tktmp`` in the same folder: hidden, with no
    result's suffix, unique per call, removed if anything fails. The file gets the
    mode a plain ``open`` gives it: an existing file's mode, else 0666 minus the
    umask (0644 under umask 022). Disk full, read-only or permission errors become
    a one-line :class:`IOFault` naming ``path``. Only global rank zero writes; on
    other ranks this does nothing.
    """
    path = Path(path)
    if not is_global_zero():
        return path
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        mode = _mode_for(path)
        write(tmp)
        os.chmod(tmp, mode)
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise io_fault(path, e) from e
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def io_fault(path: Path, e: OSError) -> OSError | IOFault:
    """``e`` as a one-line IOFault when it is a fault of the disk, else ``e`` itself."""
    if e.errno not in IO_FAULTS:
        return e
    return IOFault(f"cannot write {path}: {e.strerror} ({errno.errorcode[e.errno]}); {IO_FAULTS[e.errno]}")


def _mode_for(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: the existing file's, else 0666 minus the umask."""
    with suppress(FileNotFoundError):
        return stat.S_IMODE(path.stat().st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask both sets and gets)
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _fsync(path: Path) -> None:
    """Flush ``path`` to the disk, so the rename never exposes an empty file after a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A folder written whole or not at all: the ``with`` block fills a hidden temporary folder
    beside ``path``, which then becomes ``path`` with one ``os.replace``. Where ``path`` is still
    there (files a user left in it after ``--overwrite`` removed the owned ones), the new entries
    are moved into it instead, replacing those of the same names: nothing else in it is touched.
    Disk full, read-only or permission errors become a one-line :class:`IOFault`; the temporary
    folder never stays. Rank zero only (others get a throw-away temporary folder)."""
    import tempfile

    path = Path(path)
    if not is_global_zero():
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        tmp.mkdir()
        yield tmp
        if path.is_dir() and not path.is_symlink():
            _move_into(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as e:
        raise io_fault(path, e) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into(src: Path, dst: Path) -> None:
    """Move every entry of folder ``src`` into folder ``dst`` (folders that exist there: entry by entry)."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and target.is_dir() and not target.is_symlink():
            _move_into(entry, target)
        else:
            os.replace(entry, target)


def write_json(path: Path, obj) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def save_weights(path: Path, model: torch.nn.Module) -> Path:
    """Write ``model``'s state dict as safetensors (serialised in memory, written by ``atomic_write``)."""
    from safetensors.torch import save

    def write(p: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        p.write_bytes(save(state))
    return atomic_write(path, write)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise RunDirError(f"{path} not found; is this a finished transferkit run directory?")
    return load_file(str(path))


# ----------------------------------------------------------------------------- output vs input
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


def _check_writable(path: Path) -> None:
    """One line when ``path`` cannot be a folder this process creates and writes in."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path} is a file, not a folder; choose another --out")
    full = path.absolute()
    existing = next(p for p in (full, *full.parents) if p.exists())
    if not existing.is_dir():
        raise RunDirError(f"cannot create {path}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write in {existing} (read-only or no permission); choose another --out")


def _under(rel: str, tops: list[str]) -> bool:
    """Whether relative path ``rel`` lies under one of the top-level names ``tops`` (``""``: anywhere)."""
    return any(not t or rel == t or rel.startswith(t + "/") for t in tops)


def _unlink(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


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


# ----------------------------------------------------------------------------- the run directory
#: what ``transferkit export`` adds to a run that has a model
EXPORTED = ("model.onnx", "export.json", "export.md")
#: the files of a trained model's run (finetune, adapt, distill, pretrain)
MODEL_RUN = ("config.yaml", "metrics.json", "metrics.csv", "model.safetensors", "model.json", "report.md", "data.json")
#: what training writes below the run: Lightning's checkpoint (and ``AtomicCheckpoint``'s temporary
#: name), its CSV logs (one folder per attempt), PEFT's adapter files (``--strategy lora``)
TRAINING = ("checkpoints/last.ckpt", "checkpoints/.last.ckpt.tmp", "logs/attempt_*/metrics.csv",
            "logs/attempt_*/hparams.yaml", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
            "adapter/README.md")
#: a failed or interrupted training run is kept, for ``--resume``, once an epoch has finished
CHECKPOINTED = ("checkpoints/last.ckpt",)
#: the corruptions ``transferkit corrupt`` writes, one ``<name>-<severity>/`` folder each (as
#: ``data/corruptions.py``'s BENCHMARK + EXTRA; tests keep the two lists equal)
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")


@dataclass(frozen=True)
class Kind:
    """What one kind of run directory owns, and what a failed run leaves.

    ``owned``: glob patterns (``fnmatch``: ``*`` crosses ``/`` too) of the paths, relative to the
    folder, of the files the kind writes; one ending in ``/`` is a folder holding a run directory of its
    own (its marker says what it owns). ``--overwrite`` removes the files that match, then the folders
    on their way that this leaves empty: a user's file anywhere in the run stays. ``result``: written
    last, its presence means the run is complete. ``resume_needs``: a file without which the run cannot
    resume. ``keep``: patterns of the paths that make a failed or interrupted run worth keeping (None:
    any file); a run without any is undone, so the same command starts again. ``parts``: the folder
    collects results that runs add one by one (``corrupt``'s ``<name>-<severity>/``): a run needs only
    the parts it writes to be absent, and ``--overwrite`` replaces those alone.
    """

    owned: tuple[str, ...]
    result: str | None = None
    resume_needs: str | None = None
    keep: tuple[str, ...] | None = None
    parts: bool = False

    def owns(self, rel: str) -> bool:
        """Whether the file at relative path ``rel`` (``/``-separated) is one this kind writes."""
        return any(fnmatchcase(rel, p) for p in COMMON_OWNED + self.owned if not p.endswith("/"))

    def owns_folder(self, rel: str) -> bool:
        """Whether the folder ``rel`` lies on the way to owned files (removed when they leave it empty)."""
        return any(fnmatchcase(rel, folder) for p in self.owned for folder in _folders(p))

    def nests_run(self, rel: str) -> bool:
        """Whether the folder ``rel`` holds a run directory of its own (``compare``'s ``runs/<name>/``)."""
        return any(fnmatchcase(rel, p.rstrip("/")) for p in self.owned if p.endswith("/"))


def _folders(pattern: str) -> list[str]:
    """The folders on the way of an owned pattern: ``logs/attempt_*/metrics.csv`` -> ``logs``,
    ``logs/attempt_*``; ``runs/*/`` -> ``runs``, ``runs/*``."""
    parts = pattern.split("/")[:-1]
    return ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]


class RunDir:
    """Paths of one run directory, and the way to take it: ``check`` then ``open``.

    ::

        run = RunDir(out, kind="finetune")
        run.check(overwrite=..., resume=..., inputs=[data])   # no side effects
        with run.open(overwrite=..., resume=..., inputs=[data]) as run:
            ...                                               # write the run's files
    """

    #: Every kind and what it owns; a command with its own folder adds its Kind here. Plots are
    #: named one by one (no ``*.png``) so that a user's own picture in the folder survives
    #: ``--overwrite``: a new plot adds its name here.
    KINDS: dict[str, Kind] = {
        "finetune": Kind((*MODEL_RUN, "learning_curve.png", "confusion_matrix.png", "wise_curve.png", *TRAINING,
                          *EXPORTED), result="metrics.json", resume_needs="config.yaml", keep=CHECKPOINTED),
        "compare": Kind(("compare.json", "leaderboard.md", "compare.png", "runs/*/"), result="compare.json"),
        "rank": Kind(("rank.json", "rank.md"), result="rank.json", keep=()),
        "adapt": Kind((*MODEL_RUN, "learning_curve.png", "confusion_matrix.png", "embedding.png", *TRAINING,
                       *EXPORTED), result="metrics.json", resume_needs="config.yaml", keep=CHECKPOINTED),
        "adapt-compare": Kind(("adapt.json", "leaderboard.md", "adapt.png", "runs/*/"), result="adapt.json"),
        "distill": Kind((*MODEL_RUN, "learning_curve.png", "confusion_matrix.png", "distill.png", *TRAINING,
                         "student-alone/", *EXPORTED), result="metrics.json", resume_needs="config.yaml",
                        keep=CHECKPOINTED),
        "distill-compare": Kind(("distill.json", "leaderboard.md", "distill-compare.png", "runs/*/"),
                                result="distill.json"),
        "pretrain": Kind((*MODEL_RUN, "pretrain_curves.png", *TRAINING), result="metrics.json",
                         resume_needs="config.yaml", keep=CHECKPOINTED),
        "tta": Kind(("config.yaml", "metrics.json", "report.md", "tta.png", "model.safetensors", "model.json",
                     *EXPORTED), result="metrics.json", keep=()),
        "corrupt": Kind(tuple(f"{name}-[1-5]/{file}" for name in CORRUPTIONS
                              for file in ("labels.csv", "images/[0-9][0-9][0-9][0-9][0-9]*.png")),
                        keep=tuple(f"{name}-[1-5]" for name in CORRUPTIONS), parts=True),
    }

    def __init__(self, path: Path | str, kind: str = "finetune"):
        if kind not in self.KINDS:
            raise ValueError(f"unknown run directory kind '{kind}'; known: {', '.join(self.KINDS)}")
        self.path, self.kind = Path(path), kind
        self.writer = is_global_zero()  # False on other ranks: they write nothing
        self._lock: FileLock | None = None

    config = property(lambda self: self.path / "config.yaml")
    metrics_json = property(lambda self: self.path / "metrics.json")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    weights = property(lambda self: self.path / "model.safetensors")
    model_json = property(lambda self: self.path / "model.json")
    report = property(lambda self: self.path / "report.md")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.ckpt")
    logs = property(lambda self: self.path / "logs")
    adapter = property(lambda self: self.path / "adapter")
    marker = property(lambda self: self.path / MARKER)
    lock_file = property(lambda self: self.path / LOCK)

    @property
    def is_started(self) -> bool:
        """A transferkit run began here: the marker is present."""
        return self.marker.is_file()

    @property
    def is_complete(self) -> bool:
        """The run finished: its result file (``metrics.json`` for finetune), written last, is present."""
        result = self.KINDS[self.kind].result
        return result is not None and (self.path / result).is_file()

    def owns(self, name: str, kind: str | None = None) -> bool:
        """Whether top-level entry ``name`` is one that runs of ``kind`` (default: ours) write, or hold files in."""
        k = self.KINDS[kind or self.kind]
        return k.owns(name) or k.owns_folder(name) or k.nests_run(name)

    def read_marker(self) -> dict | None:
        """The marker's content, or None when there is none."""
        try:
            data = json.loads(self.marker.read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as e:
            raise RunDirError(f"{self.marker} is unreadable ({e}); fix or remove it") from None
        if not isinstance(data, dict) or data.get("kind") not in self.KINDS:
            raise RunDirError(f"{self.marker} is not a transferkit marker (no known 'kind'); fix or remove it")
        return data

    def _entries(self) -> list[str]:
        """Names in the folder but the lock and temporary files (another start's, or a killed one's)."""
        if not self.path.is_dir():
            return []
        return sorted(e.name for e in self.path.iterdir() if e.name != LOCK and not e.name.endswith(TEMP_SUFFIX))

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
        if not self.writer:
            return self
        if overwrite and resume:
            raise RunDirError("--overwrite and --resume exclude each other; pass one of them")
        parts = self._parts(parts)
        _check_writable(self.path)
        check_output_not_input(self.path, inputs, overwrite=overwrite)
        entries = self._entries()
        if resume:
            self._check_resumable(entries)
        elif entries:
            self._check_kind(self.read_marker(), entries)
            if not overwrite:
                self._check_new(entries, parts)
        return self

    def _parts(self, parts: Iterable[str] | None) -> list[str] | None:
        """``parts`` as a list: required by, and only by, a kind of parts, each a name the kind owns."""
        if self.KINDS[self.kind].parts != (parts is not None):
            raise ValueError(f"a {self.kind} run directory {'needs' if parts is None else 'takes no'} parts")
        if parts is not None and not all(self.KINDS[self.kind].owns_folder(p) for p in parts):
            raise ValueError(f"{parts} are not all folders a {self.kind} run directory owns")
        return None if parts is None else list(parts)

    def _check_new(self, entries: list[str], parts: list[str] | None) -> None:
        """Without ``--overwrite``: nothing of a run there yet (a kind of parts: none of ``parts``)."""
        if parts is not None:
            taken = [p for p in parts if p in entries]
            if taken:
                raise RunDirError(f"{self.path / taken[0]} exists; pass --overwrite to replace it (only the files "
                                  "transferkit wrote there) or choose another --out")
        elif entries != [MARKER]:
            resumable = " or --resume to continue it" if self.KINDS[self.kind].resume_needs else ""
            raise RunDirError(f"run directory {self.path} already exists; pass --overwrite to replace it{resumable}")

    def _check_kind(self, marker: dict | None, entries: list[str]) -> None:
        if marker is None:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise RunDirError(f"{self.path} is not a transferkit run directory (it holds {shown}); "
                              "choose another --out")
        if marker["kind"] != self.kind:
            raise RunDirError(f"{self.path} is a transferkit {marker['kind']} directory, not a {self.kind} one; "
                              "choose another --out")

    def _check_resumable(self, entries: list[str]) -> None:
        need = self.KINDS[self.kind].resume_needs
        has_need = need is None or (self.path / need).is_file()
        if not entries:
            raise RunDirError(f"cannot resume: {self.path} holds no run; start a new run without --resume")
        marker = self.read_marker()
        legacy = marker is None and need is not None and has_need and all(self.owns(e) for e in entries)
        if not legacy:
            self._check_kind(marker, entries)
        if not has_need:
            raise RunDirError(f"cannot resume: {self.path} has no {need}; start a new run without --resume")

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
        (``Kind.keep``; a resume always) is kept, and an interrupt says what it holds;
        any other is undone: the files it wrote, the marker and the folders it made
        go, so the same command starts again (and an interrupt says so). On ranks
        other than global zero nothing happens and ``writer`` is False.
        """
        if not self.writer:
            yield self
            return
        inputs, command = list(inputs), [str(c) for c in (sys.argv if command is None else command)]
        parts = self._parts(parts)
        self.check(overwrite=overwrite, resume=resume, inputs=inputs, parts=parts)
        made: list[Path] = []
        had_marker = had_lock = True
        try:
            made = _make_folder(self.path)
            had_lock = self.lock_file.exists()
            self._acquire(command)
            had_marker = self.marker.exists()
            self.check(overwrite=overwrite, resume=resume, inputs=inputs, parts=parts)
            self._remove_temporary()
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
            self._release()

    def _marker_content(self, command: list[str]) -> dict:
        return {"kind": self.kind, "transferkit": __version__, "command": command,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "owned": list(self.KINDS[self.kind].owned)}

    @contextmanager
    def locked(self, command: list[str] | None = None) -> Iterator[RunDir]:
        """Hold the run's lock for the ``with`` block, to add files to a finished run (``export``):
        refused at once, naming the holder, while another process has it, and in one line when the
        folder is not writable (``check_writable``)."""
        self.check_writable()
        try:
            self._acquire(command if command is not None else sys.argv)
        except OSError as e:  # not writable after all (a file system access() cannot see through)
            raise RunDirError(f"cannot lock run directory {self.path}: {e.strerror or e}; copy the run to a "
                              "writable folder and use the copy") from None
        try:
            yield self
        finally:
            self._release()

    def check_writable(self) -> None:
        """One line when this process cannot add files to the run's folder: a read-only file system, no
        permission, an immutable folder (``access(2)`` sees all three, for root too)."""
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RunDirError(f"run directory {self.path} is not writable (read-only file system or no "
                              "permission); copy the run to a writable folder and use the copy")

    def _acquire(self, command: list[str]) -> None:
        """Take ``.lock`` without waiting, and write who holds it into it (in place: the locked file stays)."""
        lock = FileLock(self.lock_file)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunDirError(f"run directory {self.path} is in use by {self.holder()} — wait for it or "
                              "choose another --out") from None
        self._lock = lock
        with open(self.lock_file, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": command}, fh)

    def holder(self, wait: float = 2.0) -> str:
        """Who holds the lock, as it wrote into it: 'pid N on host H (command)'.

        The holder writes this just after locking and clears it on release, so an
        empty note is read again for up to ``wait`` seconds.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                h = json.loads(self.lock_file.read_text())
                shown = shlex.join([Path(h["command"][0]).name, *h["command"][1:]]) if h["command"] else "?"
                shown = shown if len(shown) <= 100 else shown[:99] + "…"
                return f"pid {h['pid']} on host {h['host']} ({shown})"
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                if time.monotonic() > deadline:
                    return "another process (which one, it has not written)"
                time.sleep(0.01)

    def _release(self) -> None:
        if self._lock is not None:
            with suppress(OSError):
                os.truncate(self.lock_file, 0)  # no stale note for the next one refused
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------------------- failure
    def _holds_value(self) -> bool:
        """Whether the folder holds a file other than the marker, the lock and temporary files."""
        return any(p.is_file() or p.is_symlink() for p in self.path.rglob("*")
                   if p.name not in (MARKER, LOCK) and not p.name.endswith(TEMP_SUFFIX))

    def _worth_keeping(self) -> bool:
        """Whether a failed run leaves something to keep: its result, or a path its kind's ``keep`` names."""
        keep = self.KINDS[self.kind].keep
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
            e.where = f"kept the unfinished run in {self.path} ({', '.join(self._entries())})"
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
        if self._lock is not None:
            if not had_marker:
                with suppress(OSError):
                    self.marker.unlink(missing_ok=True)
            self._remove(written or [""], files=written is not None)
            if not had_lock:
                with suppress(OSError):  # unlinked while held: a waiter then retries on a new file
                    self.lock_file.unlink(missing_ok=True)
            self._release()
        for d in reversed(made):
            with suppress(OSError):
                d.rmdir()

    def _remove_temporary(self) -> None:
        """Under the lock: temporary files and folders a killed writer left at the top (``atomic_dir``'s)."""
        for entry in self.path.iterdir():
            if entry.name.endswith(TEMP_SUFFIX):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    def remove_owned(self, parts: Iterable[str] | None = None) -> list[str]:
        """Delete the files this kind owns (the marker and lock aside), and nested runs (``runs/*/``) by
        their own kind; then the owned folders this leaves empty. Everything else stays, at any depth.

        ``parts``: only under these top-level names. Only global rank zero deletes, and only in a folder
        marked with this kind. Returns the relative paths removed.
        """
        if not is_global_zero() or (self.read_marker() or {}).get("kind") != self.kind:
            return []
        return self._remove([""] if parts is None else list(parts), files=True)

    def _remove(self, tops: list[str], *, files: bool) -> list[str]:
        """The removal: under the top-level names ``tops`` (``""``: all), owned files (with ``files``) and
        nested runs, then owned folders left empty (bottom up)."""
        kind, removed = self.KINDS[self.kind], []
        for root, dirs, names in os.walk(self.path, topdown=True):
            rel_root = Path(root).relative_to(self.path).as_posix()
            for d in list(dirs):
                rel = d if rel_root == "." else f"{rel_root}/{d}"
                if not _under(rel, tops) or os.path.islink(os.path.join(root, d)):
                    dirs.remove(d)  # a symlink is listed as a folder: never followed
                    names.append(d)
                elif kind.nests_run(rel):
                    dirs.remove(d)
                    if self._remove_nested(Path(root, d), files):
                        removed.append(rel)
            for name in names:
                rel = name if rel_root == "." else f"{rel_root}/{name}"
                if files and _under(rel, tops) and kind.owns(rel) and rel not in (MARKER, LOCK):
                    _unlink(Path(root, name))
                    removed.append(rel)
        self._prune(tops)
        return removed

    def _remove_nested(self, folder: Path, files: bool) -> bool:
        """A nested run directory (``compare``'s ``runs/<name>/``): its owned files by its own kind, its
        marker and lock; the folder if left empty. False when it is not a transferkit run (kept)."""
        marker = RunDir(folder).read_marker() if (folder / MARKER).is_file() else None
        if marker is None:
            return False
        if files:
            nested = RunDir(folder, kind=marker["kind"])
            nested._remove([""], files=True)
            for name in (MARKER, LOCK):
                _unlink(folder / name)
        with suppress(OSError):
            folder.rmdir()
        return True

    def _prune(self, tops: list[str]) -> None:
        """Remove the owned folders (on the way to owned files, nested runs) that are empty, deepest first."""
        kind = self.KINDS[self.kind]
        for root, dirs, _ in os.walk(self.path, topdown=False):
            for d in dirs:
                rel = Path(root, d).relative_to(self.path).as_posix()
                if _under(rel, tops) and (kind.owns_folder(rel) or kind.nests_run(rel)):
                    with suppress(OSError):
                        os.rmdir(os.path.join(root, d))  # only an empty folder goes (a symlink: NotADirectory)

    # ------------------------------------------------------------------------- logs
    def next_attempt(self) -> str:
        if self.writer:
            self.logs.mkdir(parents=True, exist_ok=True)
        return f"attempt_{len(list(self.logs.glob('attempt_*')))}"

    def merge_logs(self) -> list[dict]:
        """Merge every attempt's CSV log into ``metrics.csv``.

        A resumed attempt restarts from the last checkpoint, so rows of earlier
        attempts at or after the resumed attempt's first step are dropped.
        """
        rows: list[dict] = []
        attempts = sorted(self.logs.glob("attempt_*/metrics.csv"),
                          key=lambda p: int(p.parent.name.split("_")[1]))
        for f in attempts:
            with f.open(newline="") as fh:
                new = list(csv.DictReader(fh))
            if new:
                start = min(int(r["step"]) for r in new)
                rows = [r for r in rows if int(r["step"]) < start] + new
        merged: dict[tuple[str, str], dict] = {}  # Lightning logs train and val of an epoch on separate rows
        for r in rows:
            row = merged.setdefault((r.get("epoch", ""), r["step"]), {})
            row.update({k: v for k, v in r.items() if v not in (None, "")})
        rows = list(merged.values())
        keys = sorted({k for r in rows for k in r})
        def write(p: Path) -> None:
            with p.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=keys)
                w.writeheader()
                w.writerows(rows)
        atomic_write(self.metrics_csv, write)
        return rows
