"""Export for deployment: ONNX files checked by ``onnx.checker`` and verified against PyTorch with
onnxruntime (:mod:`transferkit.export.onnx_export`)."""

from transferkit.export.onnx_export import OnnxModel, export_onnx, latency_ms, onnx_parity

__all__ = ["OnnxModel", "export_onnx", "latency_ms", "onnx_parity"]
