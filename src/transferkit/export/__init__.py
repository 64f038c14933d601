"""Export for deployment: ONNX files checked by ``onnx.checker`` and verified against PyTorch with
onnxruntime (:mod:`transferkit.export.onnx_export`)."""

from transferkit.export.onnx_export import (OnnxModel, check_opset, export_onnx, latency_ms, onnx_parity, spread,
                                           time_calls)

__all__ = ["OnnxModel", "check_opset", "export_onnx", "latency_ms", "onnx_parity", "spread", "time_calls"]
