"""Artifact formats, one module (or package) each, listed in the registry of `base`.

Importing this package imports every format module, so that `base.FORMATS` is complete:
`onnx` (onnxruntime), `tflite` (LiteRT), `pte` (ExecuTorch). A new format is one module that
calls `base.register_format` plus one import line here.
"""

from csideploy.formats import onnx, pte, tflite  # noqa: F401 (each registers its format)
from csideploy.formats.base import FORMATS, Format, get_format

__all__ = ["FORMATS", "Format", "get_format"]
