"""The zoo's registry: one decorator per architecture, `build(name, cr)` and `list_models()`.

Each entry declares what the rest of the pipeline needs to know about a model: the CRs it
supports, the input and codeword contract, how official checkpoint keys map onto its
`encoder` / `decoder` submodules, which layer reveals the CR, and the published figures the
tests hold it to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from csideploy.errors import ShapeError, UnknownModelError
from csideploy.models.ue_graph import SideInput, UeGraph

CSI_SHAPE = (2, 32, 32)
CSI_SIZE = 2 * 32 * 32
STANDARD_CRS = (4, 8, 16, 32, 64)
LATENTS = ("fc", "conv")


@dataclass(frozen=True)
class InputSpec:
    """What the encoder takes: shape without batch, layout, dtype, value range and offset."""

    shape: tuple[int, ...] = CSI_SHAPE
    layout: str = "NCHW"
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    zero_offset: float = 0.5
    description: str = (
        "angular-delay CSI, channels (real, imag) x 32 angle x 32 delay, "
        "scaled to [0, 1] with 0.5 meaning zero"
    )


@dataclass(frozen=True)
class PublishedFigures:
    """Figures from the papers and official code that the tests hold a model to."""

    params_total: int | None = None
    params_encoder: int | None = None
    macs_encoder_m: float | None = None
    """Encoder Conv + Linear multiply-accumulates, in millions as published (3 decimals)."""
    macs_total_m: float | None = None
    nmse_indoor_db: float | None = None
    nmse_outdoor_db: float | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One architecture in the zoo."""

    name: str
    builder: Callable[..., CsiAutoencoder]
    crs: tuple[int, ...]
    summary: str
    codeword_key: str
    """State-dict key (project layout) of the layer whose output is the codeword; dim 0 = M."""
    flat_prefixes: Mapping[str, str] = field(default_factory=dict)
    """Official flat-checkpoint key prefixes -> submodule ('encoder' or 'decoder')."""
    input_spec: InputSpec = InputSpec()
    published: Mapping[int, PublishedFigures] = field(default_factory=dict)
    onnx_tolerance: float = 1e-4
    ue_graph: Callable[[CsiAutoencoder], UeGraph | None] | None = None
    """For integer codewords: the handset graph with integer outputs (see `models.ue_graph`)."""
    side_input: SideInput | None = None
    """An extra BS-decoder input besides the codeword (DualNet-MP: the uplink CSI)."""
    latent: str = "fc"
    """"fc" (the codeword comes out of a fully connected layer) or "conv" (a feature map)."""
    conv_variant_of: str | None = None
    """For a convolutional-latent ("-cl") variant: the FC model it replaces (`--latent conv`)."""
    paired_recipe: Callable[..., object] | None = None
    """A model trained by its own recipe on paired UL/DL data (`HT` and `HT_UL` per file):
    `recipe(model, dl, ul, epochs_stage1, epochs_stage2, *, batch_size, lr, seed, on_epoch)`."""

    def __post_init__(self) -> None:
        if not self.crs or any(cr <= 0 or CSI_SIZE % cr for cr in self.crs):
            raise ValueError(f"{self.name}: CRs must divide {CSI_SIZE}, got {self.crs}")
        if any(v not in ("encoder", "decoder") for v in self.flat_prefixes.values()):
            raise ValueError(f"{self.name}: flat_prefixes must map to 'encoder' or 'decoder'")
        if self.latent not in LATENTS or (self.conv_variant_of and self.latent != "conv"):
            raise ValueError(f"{self.name}: latent must be one of {LATENTS} ('conv' for a variant)")

    def codeword_length(self, cr: int) -> int:
        return CSI_SIZE // cr


class CsiAutoencoder(nn.Module):
    """A two-sided model: `encoder` runs on the UE, `decoder` at the BS.

    `forward(x) == decoder(encoder(x))` exactly; the encoder returns the codeword as a flat
    (N, codeword_length) tensor.
    """

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, *, name: str, cr: int, codeword_length: int
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.model_name = name
        self.cr = cr
        self.codeword_length = codeword_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    summary: str,
    codeword_key: str,
    crs: tuple[int, ...] = STANDARD_CRS,
    flat_prefixes: Mapping[str, str] | None = None,
    published: Mapping[int, PublishedFigures] | None = None,
    input_spec: InputSpec | None = None,
    ue_graph: Callable[[CsiAutoencoder], UeGraph | None] | None = None,
    side_input: SideInput | None = None,
    conv_variant_of: str | None = None,
    latent: str = "fc",
    paired_recipe: Callable[..., object] | None = None,
) -> Callable[[Callable[..., CsiAutoencoder]], Callable[..., CsiAutoencoder]]:
    """Register `builder(cr, **options) -> CsiAutoencoder` under `name`."""

    def decorate(builder: Callable[..., CsiAutoencoder]) -> Callable[..., CsiAutoencoder]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=builder,
            crs=tuple(crs),
            summary=summary,
            codeword_key=codeword_key,
            flat_prefixes=dict(flat_prefixes or {}),
            published=dict(published or {}),
            input_spec=input_spec or InputSpec(),
            ue_graph=ue_graph,
            side_input=side_input,
            latent="conv" if conv_variant_of else latent,
            conv_variant_of=conv_variant_of,
            paired_recipe=paired_recipe,
        )
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`, or an error listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None


def check_cr(entry: ModelEntry, cr: int) -> int:
    """Validate a compression ratio (given as the integer reduction, e.g. 4 for CR 1/4)."""
    if cr not in entry.crs:
        supported = ", ".join(str(c) for c in entry.crs)
        raise UnknownModelError(
            f"model {entry.name!r} has no CR 1/{cr}; supported reductions: {supported}"
        )
    return cr


def build(name: str, cr: int = 4, **options: object) -> CsiAutoencoder:
    """Build a fresh (untrained) model in eval mode."""
    entry = get_entry(name)
    model = entry.builder(check_cr(entry, cr), **options)
    return model.eval()


def conv_latent_variants() -> dict[str, str]:
    """Models with a fully connected latent -> their registered convolutional-latent variant."""
    return {e.conv_variant_of: e.name for e in _REGISTRY.values() if e.conv_variant_of}


def resolve_model_name(name: str, latent: str = "fc") -> str:
    """The registry name of `name` with the given latent (`--model NAME --latent fc|conv`).

    `fc` keeps the name as given; `conv` maps a model to the variant registered with
    `conv_variant_of=name` (clnet -> clnet-cl) and keeps a name whose latent is already
    convolutional. Any other model is an error listing the models that have one.
    """
    entry = get_entry(name)
    if latent not in LATENTS:
        raise UnknownModelError(f"latent must be one of {', '.join(LATENTS)}, got {latent!r}")
    if latent == "fc" or entry.latent == "conv":
        return name
    variants = conv_latent_variants()
    if name in variants:
        return variants[name]
    pairs = ", ".join(f"{k} -> {v}" for k, v in sorted(variants.items()))
    already = ", ".join(sorted(e.name for e in _REGISTRY.values() if e.latent == "conv"))
    raise UnknownModelError(
        f"model {name!r} has no convolutional-latent variant (--latent conv); models with one: "
        f"{pairs}; already convolutional: {already}"
    )


def check_input(x: torch.Tensor, spec: InputSpec = InputSpec(), what: str = "csi") -> None:
    """Raise ShapeError unless `x` is (N, *spec.shape)."""
    if x.dim() != len(spec.shape) + 1 or tuple(x.shape[1:]) != spec.shape:
        raise ShapeError(
            f"{what}: expected shape (N, {', '.join(map(str, spec.shape))}), got {tuple(x.shape)}"
        )

