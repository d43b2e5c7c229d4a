"""Numerics gates of an exported file against the float model.

`numerics`: codeword error, NMSE against the ground truth, ONNX/torch parity, integer levels,
the NMSE-drop gate and the per-layer table. `fidelity`: the INT8 file against the float model
itself (codeword SQNR, NMSE of one reconstruction against the other), so a codeword that moved
far fails even when a poor model's NMSE "improves".
"""
