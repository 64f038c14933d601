"""The run directory: one folder per run, readable by people and programs.

::

    runs/<name>/
      transferkit.json   ownership marker: kind, transferkit version, command, created (UTC), owned
      .lock              locked by the one process writing the run (its pid, host, command)
      config.yaml        the FinetuneConfig that made the run
      metrics.json       final metrics (model, strategy, accuracies, timings, ...)
      metrics.csv        per-epoch training log (merged across resumed attempts)
      model.safetensors  final weights (whole timm model, new head included)
      model.json         how to rebuild the model and preprocess inputs
      config.json        the same for timm: timm.create_model("local-dir:RUN", pretrained=True)
      README.md          the model card: data, recipe, scores, intended use, how to load it
      report.md          config, metrics and PNG plots
      report.html        the same as one self-contained page (images embedded; opens offline)
      checkpoints/       Lightning checkpoints for --resume
      logs/attempt_N/    raw CSV logs of each (possibly interrupted) attempt
      adapter/           the LoRA adapter (PEFT format), for --strategy lora

The rules:

* **Owned.** transferkit deletes only inside a folder carrying ``transferkit.json``,
  and there only the paths its kind owns (``RunKind``, which each command declares
  in its own module with ``declare_kind``); anything else (the user's notes.txt)
  stays. A non-empty folder without the marker is never used.
* **One writer.** The process that opens a run holds an exclusive OS lock on
  ``.lock`` until it is done; a second process is refused with the holder's pid,
  host and command. The OS drops the lock when the holder dies, even by kill -9.
* **Rank zero.** Only global rank zero creates, writes or deletes; other ranks
  only train (``check``, ``open`` and ``atomic_write`` do nothing there).
* **Atomic.** Every file is written to a hidden temporary name next to it, then
  moved into place with ``os.replace``; it gets the mode a plain ``open`` gives.
* **Output never the input.** ``--out`` may not be, or lie inside, a data folder.

The modules, one job each: ``ranks`` (the rank-zero rule), ``atomic`` (atomic file I/O), ``lock``
(the run lock), ``layout`` (the kinds and their declarations; paths, marker, ownership), ``checks``
(the refusals, output never the input), ``removal`` (what ``--overwrite`` and an undo delete, at any
depth), ``transaction`` (``RunDir``: check, open, keep or undo), ``logs`` (Lightning's logs merged).
Nothing here imports torch (but ``save_weights``/``load_weights``, when called) or Lightning.
"""

from transferkit.rundir.atomic import (IO_FAULTS, TEMP_SUFFIX, atomic_dir, atomic_write, io_fault, load_weights,
                                       save_weights, write_json)
from transferkit.rundir.checks import check_output_not_input
from transferkit.rundir.layout import (CHECKPOINTED, COMMON_OWNED, MARKER, MLFLOW_STORE, MODEL_RUN, TRAINING,
                                       RunKind, RunLayout, declare_kind, declare_model_run, declared_kinds, run_kind)
from transferkit.rundir.lock import LOCK, RunLock
from transferkit.rundir.ranks import global_rank, is_global_zero
from transferkit.rundir.transaction import RunDir

__all__ = ["CHECKPOINTED", "COMMON_OWNED", "IO_FAULTS", "LOCK", "MARKER", "MLFLOW_STORE", "MODEL_RUN",
           "TEMP_SUFFIX", "TRAINING", "RunDir", "RunKind", "RunLayout", "RunLock", "atomic_dir", "atomic_write",
           "check_output_not_input", "declare_kind", "declare_model_run", "declared_kinds", "global_rank",
           "io_fault", "is_global_zero", "load_weights", "run_kind", "save_weights", "write_json"]
