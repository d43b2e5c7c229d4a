"""Quantization-aware fine-tuning (QAT) of the encoder's int8 layers, for the TFLite INT8 file.

Post-training quantization of the trained default's 2048 -> 512 FC layer has no LiteRT form
that fits the layer budget (docs/int8.md): its input spans orders of magnitude and one
per-tensor int8 grid loses about 0.12 dB. QAT lets the encoder adapt to that grid instead:
the encoder is traced, the layers to quantize are annotated by the same PT2E quantizer as the
post-training path (`tflite_pt2e.layer_quantizer`, with fake quantization), and every
encoder weight is trained for a few epochs on reconstruction MSE through the float decoder,
which stays frozen (the decoder the bundle ships is untouched). The fake-quantized graph is
then converted by `convert_pt2e` and goes through the same LiteRT conversion.

Before the file is written, `QatSettings.accept` re-measures the converted graph (the export
scores it on the calibration set against the layer budget, as the layer plan scores a
post-training layer); a graph that does not fit raises `QatRejected`, and the export writes
the file as the plan alone would have.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.defaults import DEFAULT_QAT_LR
from csideploy.formats.tflite import Converter, TfliteExportConfig
from csideploy.quantize.tflite_pt2e import flatbuffer, layer_quantizer, pt2e_convert, with_pt2e

DEFAULT_BATCH = 32


@dataclass(frozen=True)
class QatSettings:
    """What the fine-tuning runs on and how it is judged.

    `data`: NCHW float training CSI. `decoder`: the float decoder (copied, frozen).
    `accept`: an encode function of the converted graph -> (measurement, fits).
    """

    epochs: int
    data: np.ndarray
    decoder: nn.Module
    source: str
    accept: Callable[[Callable[[np.ndarray], np.ndarray]], tuple[dict[str, Any], bool]]
    lr: float = DEFAULT_QAT_LR
    batch_size: int = DEFAULT_BATCH
    seed: int = 0
    progress: Callable[[str], None] | None = None


@dataclass
class QatReport:
    """What the fine-tuning did (filled in by the converter; `to_dict` for numerics.json)."""

    epochs: int = 0
    samples: int = 0
    source: str = ""
    lr: float = DEFAULT_QAT_LR
    layers: tuple[str, ...] = ()
    """The layers fine-tuned with fake quantization."""
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    weight_change: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    accepted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "samples": self.samples,
            "data": self.source,
            "lr": self.lr,
            "layers": list(self.layers),
            "train_mse": [round(v, 8) for v in self.losses],
            "epoch_seconds": [round(v, 2) for v in self.epoch_seconds],
            "weight_change": self.weight_change,
            "calibration": self.calibration,
            "accepted": self.accepted,
        }


class QatRejected(Exception):
    """The fine-tuned graph does not fit (`QatSettings.accept`): the caller writes the file
    without QAT. Control flow between the converter and the export step, never shown."""


def qat_converter(settings: QatSettings, report: QatReport) -> Converter:
    """A TFLite converter that fine-tunes `config.layers` with fake quantization, then
    converts the graph; raises `QatRejected` when the re-measured graph does not fit."""

    def convert(
        litert: SimpleNamespace,
        module: nn.Module,
        sample: torch.Tensor,
        config: TfliteExportConfig,
        calibration: np.ndarray | None,
    ) -> bytes:
        if config.precision != "int8" or not config.layers:
            return pt2e_convert(litert, module, sample, config, calibration)
        litert = with_pt2e(litert)
        quantizer = layer_quantizer(litert, config, qat=True)
        prepared = _prepared(litert, module, quantizer, settings.batch_size)
        report.layers = tuple(config.layers)
        before = _weights(prepared)
        fine_tune(prepared, settings, config.layout == "nhwc", report)
        report.weight_change = _change(before, _weights(prepared))
        from torchao.quantization.pt2e import move_exported_model_to_eval

        move_exported_model_to_eval(prepared)
        quantized = litert.convert_pt2e(prepared, fold_quantize=False)
        measured, fits = settings.accept(_encode_with(quantized, config.layout == "nhwc"))
        report.calibration, report.accepted = measured, fits
        if not fits:
            raise QatRejected(str(measured))
        static = layer_quantizer(litert, config, qat=False)
        return flatbuffer(litert, quantized, static, config, sample)

    return convert


def _prepared(litert: SimpleNamespace, module: nn.Module, quantizer: Any, batch: int) -> Any:
    """The boundary module traced with a dynamic batch and prepared for QAT (train mode)."""
    from torchao.quantization.pt2e import move_exported_model_to_train

    example = torch.rand(2, *_input_shape(module), generator=torch.Generator().manual_seed(0))
    dim = torch.export.Dim("batch", min=1, max=max(batch, 2))
    graph = torch.export.export(module, (example,), dynamic_shapes=({0: dim},)).module()
    prepared = litert.prepare_qat_pt2e(graph, quantizer)
    move_exported_model_to_train(prepared)
    return prepared


def _input_shape(module: nn.Module) -> tuple[int, ...]:
    """(2, 32, 32) for NCHW, (32, 32, 2) for an NHWC boundary."""
    return (32, 32, 2) if getattr(module, "nhwc", False) else (2, 32, 32)


def fine_tune(prepared: Any, settings: QatSettings, nhwc: bool, report: QatReport) -> None:
    """`settings.epochs` epochs of Adam on reconstruction MSE through the frozen decoder,
    shuffled with `settings.seed`; one progress line per epoch."""
    decoder = copy.deepcopy(settings.decoder).eval()
    for parameter in decoder.parameters():
        parameter.requires_grad_(False)
    parameters = [p for p in prepared.parameters() if p.is_floating_point()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=settings.lr)
    data = torch.from_numpy(np.ascontiguousarray(settings.data, dtype=np.float32))
    generator = torch.Generator().manual_seed(settings.seed)
    report.epochs, report.samples = settings.epochs, len(data)
    report.source, report.lr = settings.source, settings.lr
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for start in range(0, len(data), settings.batch_size):
            csi = data[order[start : start + settings.batch_size]]
            codeword = prepared(csi.permute(0, 2, 3, 1) if nhwc else csi)
            loss = nn.functional.mse_loss(decoder(codeword), csi)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(csi)
        report.losses.append(total / len(data))
        report.epoch_seconds.append(time.perf_counter() - started)
        if settings.progress is not None:
            settings.progress(
                f"qat epoch {epoch}/{settings.epochs}: train MSE {report.losses[-1]:.3e} "
                f"({report.epoch_seconds[-1]:.1f} s, {len(data)} samples)"
            )


def _encode_with(quantized: Any, nhwc: bool) -> Callable[[np.ndarray], np.ndarray]:
    """NCHW CSI -> codewords of the converted (int8-simulating) graph, in chunks."""

    def encode(csi: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(csi), DEFAULT_BATCH):
                part = csi[start : start + DEFAULT_BATCH]
                chunk = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
                out.append(quantized(chunk.permute(0, 2, 3, 1) if nhwc else chunk).numpy())
        return np.concatenate(out).reshape(len(csi), -1)

    return encode


def _weights(prepared: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in prepared.named_parameters()}


def _change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative L2 change of every weight tensor that moved (name -> |W' - W| / |W|)."""
    change = {}
    for name, old in before.items():
        norm = float(old.norm())
        delta = float((after[name] - old).norm())
        if delta > 0:
            change[name] = round(delta / max(norm, 1e-12), 6)
    return change
