"""``export``: a finished run's model as ``model.onnx``, checked, and verified against PyTorch on
the run's own test images (issue 12). Written into the run directory under its lock."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from transferkit.errors import ConfigError, Interrupted
from transferkit.rundir import TEMP_SUFFIX, RunDir, write_json

PARITY_IMAGES = 32
TOLERANCE = 1e-4
#: timed calls per backend and batch size, after warm-up (``export.time_calls``), and the time they may take
REPEATS, BUDGET_SECONDS = 30, 5.0
#: what export adds to a run that has a model: the kinds of such runs own these names too (rundir.layout)
EXPORTED = ("model.onnx", "export.json", "export.md")


def export_run(run_dir: Path | str, *, fmt: str = "onnx", opset: int = 18, dynamic_batch: bool = True,
               threads: int = 1) -> dict:
    """Write ``model.onnx`` + ``export.md`` + ``export.json`` into ``run_dir``; returns ``export.json``'s content.

    Everything is checked before the run's lock is taken; the model is exported, verified and timed
    under a temporary name, then published (``export.json`` last: present, it describes the
    ``model.onnx`` beside it). A failed or interrupted export leaves the run as it was.

    The example exports the run ``runs/digits`` that ``tk.finetune``'s example writes.

    Example::

        >>> import transferkit as tk
        >>> info = tk.export("runs/digits")          # or tk.load("runs/digits").export()
        >>> info["file"], info["input"], info["within_tolerance"]
        ('model.onnx', [None, 3, 32, 32], True)
    """
    from transferkit.export import check_opset, export_onnx, onnx_parity
    from transferkit.predict import load_run_model

    if fmt != "onnx":
        raise ConfigError(f"unknown export format '{fmt}'; onnx is the one supported")
    check_opset(opset)
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    model, meta = load_run_model(run_dir, "cpu")
    run = RunDir(run_dir)
    run.check_writable()  # before the parity images and the export: the files go into the run
    size = int(meta["data_config"]["input_size"][-1])
    images, where = parity_images(run, meta)
    batches = sorted({1, min(8, len(images)), len(images)}) if dynamic_batch else [1]
    with run.locked(), _unfinished(run) as staged:
        start = time.perf_counter()
        temperature = float(meta.get("temperature", 1.0))
        export_onnx(model, staged, size, opset=opset, dynamic_batch=dynamic_batch, temperature=temperature,
                    metadata=onnx_metadata(meta))
        parity = onnx_parity(staged, model, images, temperature)
        info = {"format": "onnx", "file": "model.onnx", "opset": opset, "dynamic_batch": dynamic_batch,
                "input": [None if dynamic_batch else 1, 3, size, size], "bytes": staged.stat().st_size,
                "export_seconds": round(time.perf_counter() - start, 2), "parity_images": where, **parity,
                "within_tolerance": max(parity["max_abs_diff"], parity["max_abs_diff_probabilities"] or 0) <= TOLERANCE,
                "temperature": temperature, "tolerance": TOLERANCE,
                "latency": measure_latency(model, staged, images, batches, threads)}
        publish(run, staged, info, batches)
    return info


def onnx_metadata(meta: dict) -> dict:
    """What a consumer of ``model.onnx`` needs besides the graph, from the run's ``model.json``: class
    names, calibration temperature, input size and normalisation."""
    data = meta.get("data_config", {})
    return {"classes": meta.get("classes"), "temperature": float(meta.get("temperature", 1.0)),
            "input_size": data.get("input_size"), "mean": data.get("mean"), "std": data.get("std"),
            "interpolation": data.get("interpolation"), "architecture": meta.get("architecture")}


@contextmanager
def _unfinished(run: RunDir) -> Iterator[Path]:
    """A temporary name for the new ``model.onnx`` beside it, removed whatever happens; on an interrupt,
    the message says the run was left as it was."""
    staged = run.path / f".model.onnx.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        yield staged
    except Interrupted as e:
        if not e.where:
            e.where = f"the export was not finished; {run.path} is as it was (no new model.onnx or export.json)"
        raise
    finally:
        staged.unlink(missing_ok=True)


def publish(run: RunDir, staged: Path, info: dict, batches: list[int]) -> None:
    """The staged ``model.onnx`` in place, then ``export.md``, then ``export.json`` (the old one goes
    first: an ``export.json`` never describes another ``model.onnx``)."""
    (run.path / "export.json").unlink(missing_ok=True)
    os.replace(staged, run.path / "model.onnx")  # a rename in one folder: the file was written and synced
    write_latency_table(run.path / "export.md", info, batches)
    write_json(run.path / "export.json", info)


def measure_latency(model: torch.nn.Module, path: Path, images: torch.Tensor, batches: list[int],
                    threads: int = 1) -> dict:
    """Milliseconds per call of PyTorch and onnxruntime at each batch size: median, quartiles, extremes
    of up to ``REPEATS`` calls (``BUDGET_SECONDS`` each) after warm-up, both backends on ``threads``
    threads. Each backend is timed alone: PyTorch first, with no onnxruntime session alive (its idle
    threads spin and take the cores), then onnxruntime. One thread by default: on a machine shared with
    other processes, PyTorch's threads wait on each other at every operator, so its times with two
    or more swing from milliseconds to seconds (measured: batch 8, median 4.3 s, fastest 15 ms); the
    load average is recorded beside them."""
    from transferkit.export import OnnxModel, spread, time_calls

    before, model = torch.get_num_threads(), model.eval().cpu()
    torch.set_num_threads(threads)
    try:
        times = {f"torch_ms_batch{b}": spread(time_calls(model, images[:b], REPEATS, budget_seconds=BUDGET_SECONDS))
                 for b in batches}
    finally:
        torch.set_num_threads(before)
    served = OnnxModel(path, threads=threads)
    times |= {f"onnxruntime_ms_batch{b}": spread(time_calls(served, images[:b], REPEATS, budget_seconds=BUDGET_SECONDS))
              for b in batches}
    del served
    return {**{k: t["median"] for k, t in times.items()}, "spread": times, "threads": threads,
            "repeats": REPEATS, "load_average": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
            "note": f"CPU, ms per call: median (quartiles, extremes) of up to {REPEATS} calls after warm-up; "
                    "both backends on `threads` threads, each timed alone (PyTorch first)"}


def write_latency_table(path: Path, info: dict, batches: list[int]) -> Path:
    """``export.md``: parity, and PyTorch vs onnxruntime per batch size: ms per call (median and
    quartiles) and images/s at the median."""
    from transferkit.rundir import atomic_write

    lat = info["latency"]
    lines = [f"# Export: {info['file']} (opset {info['opset']}, {info['bytes'] / 1e6:.1f} MB)", "",
             f"onnxruntime vs PyTorch logits: max |diff| {info['max_abs_diff']:.2e} on {info['images']} "
             f"{info['parity_images']} at batch {', '.join(map(str, info['batch_sizes']))} (tolerance "
             f"{info['tolerance']:g}); the `probabilities` output is softmax(logits / {info.get('temperature', 1.0):.3f}), "
             "the run's calibration temperature (classes, temperature and preprocessing are in the file's "
             "metadata).", "",
             f"Latency on this CPU, {lat['threads']} thread(s) for both, each backend timed alone; median "
             f"[quartiles] of up to {lat['repeats']} calls after warm-up; load average {lat['load_average']} on "
             f"{lat['cpus']} CPUs (other processes' work slows and spreads the times):", "",
             "| batch | PyTorch ms/call | onnxruntime ms/call | PyTorch images/s | onnxruntime images/s |",
             "|---|---|---|---|---|"]
    for b in batches:
        t, o = lat["spread"][f"torch_ms_batch{b}"], lat["spread"][f"onnxruntime_ms_batch{b}"]
        lines.append(f"| {b} | {_ms(t)} | {_ms(o)} | {1000 * b / t['median']:.0f} | {1000 * b / o['median']:.0f} |")
    return atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n"))


def _ms(t: dict) -> str:
    return f"{t['median']:.2f} [{t['p25']:.2f}–{t['p75']:.2f}]"


def parity_images(run: RunDir, meta: dict) -> tuple[torch.Tensor, str]:
    """Up to 32 of the run's own test images (its data's test split, else its images), through its
    eval transform; seeded Gaussian noise when the run's data cannot be read here (said in the note)."""
    from transferkit.predict import run_data_sample

    data = run_data_sample(run.path, meta, PARITY_IMAGES, 0, "test")
    if data is None:  # the run's data moved or is not recorded: noise still checks parity
        size = int(meta["data_config"]["input_size"][-1])
        return torch.randn(PARITY_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0)), "noise"
    return torch.stack([data[i][0] for i in range(len(data))]), "test images of the run's data"
