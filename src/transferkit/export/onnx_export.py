"""ONNX export of a classifier and its verification with onnxruntime.

torch 2.x's ``torch.onnx.export`` uses the ``torch.export`` (dynamo) exporter: it fixes every input
dimension unless declared dynamic, and may put the weights in a side ``.onnx.data`` file. Here the
batch axis is declared dynamic (``dynamic_batch``) and the weights are kept inside ``model.onnx``.
Parity: the largest absolute difference between onnxruntime's and PyTorch's logits on the same
inputs, at batch 1 and at batch 8 (float32: expect <= 1e-4).

The file has two outputs: ``logits`` (B, C) and ``probabilities`` = ``softmax(logits / T)`` with the
run's calibration temperature ``T`` (fitted on validation; ``evaluation/calibration.py``), so a
deployment reads calibrated probabilities without knowing transferkit. The metadata (ONNX
``metadata_props``, JSON values) carry what a consumer needs besides: ``classes``, ``temperature``,
``mean``, ``std``, ``input_size``, ``interpolation``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferkit.errors import ConfigError

INPUT, OUTPUT, PROBABILITIES = "images", "logits", "probabilities"
DEFAULT_OPSET = 18


def check_opset(opset: int) -> int:
    if not 7 <= opset <= 23:
        raise ConfigError(f"--opset must be between 7 and 23, got {opset}")
    return opset


class Calibrated(nn.Module):
    """``model`` with a second output: ``(logits, softmax(logits / T))``, ``T`` the calibration temperature."""

    def __init__(self, model: nn.Module, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"the calibration temperature must be positive, got {temperature!r}")
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, (logits / self.temperature).softmax(-1)


def export_onnx(model: nn.Module, path: Path | str, image_size: int, *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, temperature: float = 1.0, metadata: dict | None = None) -> Path:
    """Write ``model`` (eval mode, on CPU) as ONNX to ``path``, checked, atomically (``rundir.atomic_write``):
    input ``images`` (B, 3, S, S) float32 -> outputs ``logits`` (B, C) and ``probabilities``
    (``softmax(logits / temperature)``). B is dynamic with ``dynamic_batch``, else 1. ``metadata``:
    JSON-encoded into the file's ``metadata_props``."""
    import json

    import onnx

    from transferkit.rundir import atomic_write

    check_opset(opset)
    wrapped = Calibrated(model.eval().cpu(), temperature).eval()
    example = torch.zeros(2 if dynamic_batch else 1, 3, image_size, image_size)
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapped, (example,), dynamo=True, opset_version=opset, input_names=[INPUT],
                                    output_names=[OUTPUT, PROBABILITIES], dynamic_shapes=dynamic, verbose=False)

    def write(tmp: Path) -> None:
        proto = program.model_proto
        for key, value in (metadata or {}).items():
            proto.metadata_props.add(key=key, value=json.dumps(value))
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)
    return atomic_write(Path(path), write)


class OnnxModel:
    """An exported ``model.onnx`` run by onnxruntime on the CPU, called like the PyTorch model:
    ``OnnxModel(path)(images (B, 3, S, S) tensor) -> logits tensor``."""

    def __init__(self, path: Path | str, threads: int | None = None):
        """``threads``: onnxruntime's intra-op threads (None: its default, one per core); given, the
        operators run one at a time (one inter-op thread) on exactly that many, as PyTorch's do."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the file was exported for, or None when it is dynamic."""
        b = self.input.shape[0]
        return b if isinstance(b, int) else None

    @property
    def metadata(self) -> dict:
        """The file's ``metadata_props``, JSON-decoded (``classes``, ``temperature``, ...)."""
        import json

        return {k: json.loads(v) for k, v in self.session.get_modelmeta().custom_metadata_map.items()}

    def outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every output of the file for ``images``: ``[logits]`` or ``[logits, probabilities]``."""
        x = images.detach().cpu().float().numpy()
        return [torch.from_numpy(o) for o in self.session.run(None, {self.input.name: x})]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.outputs(images)[0]


def onnx_parity(path: Path | str, model: nn.Module, images: torch.Tensor, temperature: float = 1.0) -> dict:
    """Max |onnxruntime - PyTorch| over the logits of ``images`` (N, 3, S, S), fed at batch 1 (the
    first image) and in batches of 8 when the file's batch is dynamic (else one by one); and over the
    ``probabilities`` output against ``softmax(logits / temperature)`` when the file has it."""
    onnx_model, model = OnnxModel(path), model.eval().cpu()
    batch = 8 if onnx_model.fixed_batch is None else onnx_model.fixed_batch
    diffs, prob_diffs, sizes = [], [], set()
    with torch.no_grad():
        for chunk in [images[:1], *images.split(batch)]:
            if onnx_model.fixed_batch not in (None, len(chunk)):
                continue
            outputs, logits = onnx_model.outputs(chunk), model(chunk)
            diffs.append(float((outputs[0] - logits).abs().max()))
            if len(outputs) > 1:
                prob_diffs.append(float((outputs[1] - (logits / temperature).softmax(-1)).abs().max()))
            sizes.add(len(chunk))
    return {"max_abs_diff": float(np.max(diffs)), "batch_sizes": sorted(sizes), "images": len(images),
            "max_abs_diff_probabilities": float(np.max(prob_diffs)) if prob_diffs else None}


def time_calls(fn, images: torch.Tensor, repeats: int = 30, warmup: int = 5, warmup_seconds: float = 0.3,
               budget_seconds: float | None = None) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn(images)`` (no autograd), after at least
    ``warmup`` untimed calls lasting at least ``warmup_seconds`` together (at most 200 calls): lazy
    set-up (oneDNN primitives, onnxruntime's memory arena, thread pools) is past before timing.
    ``budget_seconds``: stop early once the timed calls took that long (at least 5 calls)."""
    import time

    with torch.no_grad():
        start, calls = time.perf_counter(), 0
        while calls < warmup or (time.perf_counter() - start < warmup_seconds and calls < 200):
            fn(images)
            calls += 1
        times: list[float] = []
        while len(times) < repeats and (budget_seconds is None or len(times) < 5
                                        or sum(times) < 1000 * budget_seconds):
            t = time.perf_counter()
            fn(images)
            times.append(1000 * (time.perf_counter() - t))
    return times


def latency_ms(fn, images: torch.Tensor, repeats: int = 20) -> float:
    """Median milliseconds of ``fn(images)`` over ``repeats`` calls, after warm-up (``time_calls``)."""
    return round(float(np.median(time_calls(fn, images, repeats))), 3)


def spread(times: list[float]) -> dict:
    """Median, quartiles and extremes of ``times`` (ms), rounded to the microsecond."""
    q = np.percentile(times, [0, 25, 50, 75, 100])
    return {**{k: round(float(v), 3) for k, v in zip(("min", "p25", "median", "p75", "max"), q)}, "calls": len(times)}
