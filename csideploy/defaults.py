"""Defaults and limits of the export options, importable without numpy, onnx or torch.

The command line builds its options from these before anything heavy is loaded; the pipeline,
the ONNX format and the INT8 fidelity gate read the same values.
"""

DEFAULT_CALIB_SAMPLES = 256
DEFAULT_EVAL_SAMPLES = 1000
MIN_CALIB_SAMPLES = 32
MIN_EVAL_SAMPLES = 16
DEFAULT_OPSET = 18
DEFAULT_MAX_NMSE_DROP_DB = 0.3
DEFAULT_MIN_CODEWORD_SQNR_DB = 15.0
DEFAULT_MAX_FIDELITY_NMSE_DB = -15.0
INT8_LAYER_CHOICES = ("auto", "accuracy", "all")
DEFAULT_QAT_LR = 5e-5
"""Adam rate of `--qat-epochs`: small, the float weights are already trained."""
DEFAULT_QAT_SAMPLES = 1024
