"""The handset bundle: manifest, golden vectors, verification and reproducible packing.

Nothing in this subpackage imports torch: a handset team verifies a bundle with numpy and a
runtime (onnxruntime or LiteRT) alone.
"""
