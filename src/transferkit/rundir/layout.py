"""The run-directory layout: what each kind of run owns, declared by the command that writes it, and
the paths, marker and ownership of one run directory (reading only: nothing here writes).

A command declares its kind once, in its own module, at import (``EXPORTED``: what ``export`` adds,
declared by engine/export.py)::

    RANK_RUN = declare_kind("rank", ("rank.json", "rank.md"), result="rank.json", keep=())
    FINETUNE_RUN = declare_model_run("finetune", "learning_curve.png", "confusion_matrix.png", *EXPORTED)

and passes it to ``RunDir(out, kind=FINETUNE_RUN)``. A kind's name (``RunDir(out, kind="rank")``, a
marker's ``kind``) is looked up among the kinds declared in this process; ``RunDir(path)`` (kind
``finetune``) that only reads a run's paths needs none. Plots are named one by one (no
``*.png``) so that a user's own picture in the folder survives ``--overwrite``: a new plot adds its
name to its command's declaration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from transferkit.errors import RunDirError
from transferkit.rundir.atomic import TEMP_SUFFIX
from transferkit.rundir.lock import LOCK

MARKER = "transferkit.json"
#: Owned by every kind: the marker, the lock and temporary files (at any depth) left by a killed writer.
COMMON_OWNED = (MARKER, LOCK, f".*{TEMP_SUFFIX}", f"*/.*{TEMP_SUFFIX}")

# Pieces written by shared code (engine/stages.py, Lightning), which the commands' declarations are made of:
#: the files of a trained model's run (finetune, adapt, distill, pretrain); ``config.json`` + ``README.md``: timm's
#: config and the model card, which make the folder a timm / Hugging Face model (engine/stages.py)
MODEL_RUN = ("config.yaml", "metrics.json", "metrics.csv", "model.safetensors", "model.json", "report.md",
             "report.html", "data.json", "config.json", "README.md")
#: the MLflow store ``--logger mlflow`` writes (engine/loggers.py): a SQLite file and its journal; a run's
#: own, or a grid's (compare, adapt/distill leaderboards), shared by its runs
MLFLOW_STORE = ("mlflow.db", "mlflow.db-*")
#: what training writes below the run: Lightning's checkpoint (and ``AtomicCheckpoint``'s temporary
#: name), its CSV logs (one folder per attempt), PEFT's adapter files (``--strategy lora``), what
#: ``--logger`` adds (TensorBoard's event files, the MLflow store, the MLflow run a resume logs on into)
TRAINING = ("checkpoints/last.ckpt", "checkpoints/.last.ckpt.tmp", "logs/attempt_*/metrics.csv",
            "logs/attempt_*/hparams.yaml", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
            "adapter/README.md", "tensorboard/*", *MLFLOW_STORE, "logs/mlflow.json")
#: a failed or interrupted training run is kept, for ``--resume``, once an epoch has finished
CHECKPOINTED = ("checkpoints/last.ckpt",)


@dataclass(frozen=True)
class RunKind:
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

    name: str
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


# ----------------------------------------------------------------------------- declarations
_DECLARED: dict[str, RunKind] = {}


def declare_kind(name: str, owned: tuple[str, ...], *, result: str | None = None, resume_needs: str | None = None,
                 keep: tuple[str, ...] | None = None, parts: bool = False) -> RunKind:
    """Declare the kind of run directory ``name`` (the fields: :class:`RunKind`); returns it. Called
    once by the command that writes such runs, in its own module. Declaring a name again is accepted
    only with the same fields (a module imported twice)."""
    kind = RunKind(name, tuple(owned), result, resume_needs, None if keep is None else tuple(keep), parts)
    declared = _DECLARED.setdefault(name, kind)
    if declared != kind:
        raise ValueError(f"run directory kind '{name}' declared twice, with different files")
    return declared


def declare_model_run(name: str, *own: str) -> RunKind:
    """Declare the kind of a trained model's run: ``MODEL_RUN``, the command's ``own`` files (its plots,
    what ``export`` adds), ``TRAINING``; complete with ``metrics.json``, resumable with ``config.yaml``,
    kept once an epoch's checkpoint is written."""
    owned = (*MODEL_RUN, *own, *TRAINING)
    return declare_kind(name, owned, result="metrics.json", resume_needs="config.yaml", keep=CHECKPOINTED)


def run_kind(kind: RunKind | str) -> RunKind:
    """``kind`` itself, or the kind declared under that name (one line naming those declared if none)."""
    if isinstance(kind, RunKind):
        return kind
    if kind not in _DECLARED:
        raise ValueError(f"unknown run directory kind '{kind}'; known: {', '.join(_DECLARED) or 'none'} (a "
                         "command declares its kind with declare_kind when its module is imported)")
    return _DECLARED[kind]


def declared_kinds() -> tuple[str, ...]:
    """The names of the kinds declared in this process, in order of declaration."""
    return tuple(_DECLARED)


def kind_of_marker(marker: dict) -> RunKind:
    """The kind a marker names: its declaration, else (a command this process has not imported) what
    the marker itself says the run owns."""
    if marker["kind"] in _DECLARED:
        return _DECLARED[marker["kind"]]
    owned = marker.get("owned")
    return RunKind(marker["kind"], tuple(str(p) for p in owned) if isinstance(owned, list) else ())


# ----------------------------------------------------------------------------- one run directory
class RunLayout:
    """The paths of one run directory, its marker and what its kind owns; reads, never writes.

    ``kind``: a :class:`RunKind`, or the name of a declared one, looked up when first needed (so a
    ``RunDir(path)`` that only reads the run's files needs no declaration).
    """

    def __init__(self, path: Path | str, kind: RunKind | str = "finetune"):
        self.path = Path(path)
        self.kind = kind if isinstance(kind, str) else kind.name
        self._spec = None if isinstance(kind, str) else kind

    @property
    def spec(self) -> RunKind:
        """What this run's kind owns (``run_kind``)."""
        if self._spec is None:
            self._spec = run_kind(self.kind)
        return self._spec

    config = property(lambda self: self.path / "config.yaml")
    metrics_json = property(lambda self: self.path / "metrics.json")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    weights = property(lambda self: self.path / "model.safetensors")
    model_json = property(lambda self: self.path / "model.json")
    report = property(lambda self: self.path / "report.md")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.ckpt")
    logs = property(lambda self: self.path / "logs")
    tensorboard = property(lambda self: self.path / "tensorboard")
    mlflow_db = property(lambda self: self.path / MLFLOW_STORE[0])
    mlflow_record = property(lambda self: self.path / "logs" / "mlflow.json")
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
        result = self.spec.result
        return result is not None and (self.path / result).is_file()

    def owns(self, name: str, kind: RunKind | str | None = None) -> bool:
        """Whether top-level entry ``name`` is one that runs of ``kind`` (default: ours) write, or hold files in."""
        k = self.spec if kind is None else run_kind(kind)
        return k.owns(name) or k.owns_folder(name) or k.nests_run(name)

    def read_marker(self) -> dict | None:
        """The marker's content, or None when there is none. Its ``kind`` need not be declared here: a
        process knows the kinds of the commands it imported."""
        try:
            data = json.loads(self.marker.read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as e:
            raise RunDirError(f"{self.marker} is unreadable ({e}); fix or remove it") from None
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str) or not data["kind"]:
            raise RunDirError(f"{self.marker} is not a transferkit marker (no known 'kind'); fix or remove it")
        return data

    def entries(self) -> list[str]:
        """Names in the folder but the lock and temporary files (another start's, or a killed one's)."""
        if not self.path.is_dir():
            return []
        return sorted(e.name for e in self.path.iterdir() if e.name != LOCK and not e.name.endswith(TEMP_SUFFIX))
