"""INT8 methods for the UE encoder, one module per concern.

- `base`: the registry of INT8 methods (`--int8` values): precision, file names, calibration.
- `onnx_qdq`: ONNX Runtime static QDQ (minmax / entropy / percentile) and dynamic INT8.
- `tflite_pt2e` (+ `tflite_pt2e_rules`): TFLite full-integer and dynamic-range INT8 by PT2E.
- `diagnostics`: ops left in float in a quantized ONNX graph; per-tensor SQNR.
- `blockwise_fc`: an FC layer with int8 weights and int8 activations quantized per block of
  inputs at run time (ONNX Runtime's MatMulNBits), the layer plan's "dynamic" form.
- `calibration_data`: checks on a calibration set (degenerate, mismatched with the evaluation
  set) and equal-size calibration batches.
- `onnx_graph`: edits of a quantized ONNX graph (float codeword output, bias correction).
- `onnx_plan`: which layers an ONNX INT8 encoder quantizes, chosen by measured speed and
  sensitivity.
"""
