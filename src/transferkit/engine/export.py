"""``export``: a finished run's model as ``model.onnx``, checked, and verified against PyTorch on
the run's own test images (issue 12). Written into the run directory under its lock."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from transferkit.errors import ConfigError
from transferkit.rundir import RunDir, write_json

PARITY_IMAGES = 32
TOLERANCE = 1e-4


def export_run(run_dir: Path | str, *, fmt: str = "onnx", opset: int = 18, dynamic_batch: bool = True) -> dict:
    """Write ``model.onnx`` + ``export.json`` into ``run_dir``; returns ``export.json``'s content."""
    from transferkit.export import OnnxModel, export_onnx, latency_ms, onnx_parity
    from transferkit.predict import load_run_model

    if fmt != "onnx":
        raise ConfigError(f"unknown export format '{fmt}'; onnx is the one supported")
    model, meta = load_run_model(run_dir, "cpu")
    run = RunDir(run_dir)
    run.check_writable()  # before the parity images and the export: the files go into the run
    size = int(meta["data_config"]["input_size"][-1])
    images, where = parity_images(run, meta)
    with run.locked():
        start = time.perf_counter()
        path = export_onnx(model, run.path / "model.onnx", size, opset=opset, dynamic_batch=dynamic_batch)
        parity = onnx_parity(path, model, images)
        served = OnnxModel(path, threads=torch.get_num_threads())  # the same threads as PyTorch
        batches = [1, len(images)] if dynamic_batch else [1]
        speed = {f"{name}_ms_batch{b}": latency_ms(fn, images[:b]) for b in batches
                 for name, fn in (("torch", model), ("onnxruntime", served))}
        info = {"format": "onnx", "file": path.name, "opset": opset, "dynamic_batch": dynamic_batch,
                "input": [None if dynamic_batch else 1, 3, size, size], "bytes": path.stat().st_size,
                "export_seconds": round(time.perf_counter() - start, 2), "parity_images": where, **parity,
                "within_tolerance": parity["max_abs_diff"] <= TOLERANCE, "tolerance": TOLERANCE,
                "latency": {**speed, "threads": torch.get_num_threads(), "note": "CPU, median of 20 calls, both on `threads` threads"}}
        write_latency_table(run.path / "export.md", info, batches)
        write_json(run.path / "export.json", info)
    return info


def write_latency_table(path: Path, info: dict, batches: list[int]) -> Path:
    """``export.md``: parity, and PyTorch vs onnxruntime per batch size in ms/image and images/s."""
    from transferkit.rundir import atomic_write

    lat = info["latency"]
    lines = [f"# Export: {info['file']} (opset {info['opset']}, {info['bytes'] / 1e6:.1f} MB)", "",
             f"onnxruntime vs PyTorch logits: max |diff| {info['max_abs_diff']:.2e} on {info['images']} "
             f"{info['parity_images']} at batch {', '.join(map(str, info['batch_sizes']))} (tolerance "
             f"{info['tolerance']:g}).", "", f"Latency on this CPU, {lat['threads']} thread(s), median of 20 calls:", "",
             "| batch | PyTorch ms/image | onnxruntime ms/image | PyTorch images/s | onnxruntime images/s |",
             "|---|---|---|---|---|"]
    for b in batches:
        t, o = lat[f"torch_ms_batch{b}"] / b, lat[f"onnxruntime_ms_batch{b}"] / b
        lines.append(f"| {b} | {t:.2f} | {o:.2f} | {1000 / t:.0f} | {1000 / o:.0f} |")
    return atomic_write(path, lambda p: p.write_text("\n".join(lines) + "\n"))


def parity_images(run: RunDir, meta: dict) -> tuple[torch.Tensor, str]:
    """Up to 32 of the run's own test images (its data's test split, else its images), through its
    eval transform; seeded Gaussian noise when the run's data cannot be read here (said in the note)."""
    from transferkit.predict import run_data_sample

    data = run_data_sample(run.path, meta, PARITY_IMAGES, 0, "test")
    if data is None:  # the run's data moved or is not recorded: noise still checks parity
        size = int(meta["data_config"]["input_size"][-1])
        return torch.randn(PARITY_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0)), "noise"
    return torch.stack([data[i][0] for i in range(len(data))]), "test images of the run's data"
