"""3GPP TR 38.901 CSI from Sionna's system-level channel models (UMa, UMi, RMa), written in
the COST2100 file layout. Needs the optional extra: `pip install 'csideploy[sionna]'`
(the `sionna-no-rt` package, Sionna 2.x, PyTorch-based).

Defaults follow the LORA seed's QuaDRiGa setup: 3.5 GHz carrier, 1024 subcarriers spaced
30 kHz, a 32-antenna BS, the first 32 delay rows kept, single-antenna UE moving at 6 km/h,
non-line-of-sight (the CLLWCsiNet seed's "UMa NLOS"); BS heights 25 m (UMa), 10 m (UMi,
RMa) as in that paper. UEs are outdoor unless `indoor_probability` says otherwise.

Per drop (one UE, one BS, one time snapshot): Sionna draws the large-scale parameters and
rays of the scenario and returns path coefficients a (32 BS antennas x P paths) and delays
tau; the spatial-frequency channel is H[n, k] = sum_p a[n, p] exp(-j 2 pi f_k tau_p) at the
baseband subcarrier frequencies f_k = (k - 512) * 30 kHz. As in the COST2100 data (and
`csideploy.calibration.synthetic`), the angular-delay CSI is the DFT across antennas and the
inverse DFT across subcarriers, keeping the first 32 delay rows: Ha (32 angle x 32 delay).

Arrays: `array="ula"` (default) is a horizontal 1 x 32 single-polarised panel, half-wavelength
spacing, 38.901 element pattern, whose antenna DFT is the usual angular domain;
`array="upa-xpol"` is the LORA paper's 4 x 4 cross-polarised panel (32 ports), the antenna DFT
taken across Sionna's port order (not a clean beam space).

Scaling and angle order: the released COST2100 convention (`convention`, docs/data.md). The
angle bins are centred (the antenna DFT fftshifted) and each sample is divided by twice its
largest |Re| or |Im|: x = 0.5 + Ha / (2 HT_norm), [real | imag] rows, in [0, 1] with every
sample reaching 0 or 1 somewhere. 3GPP drops differ in path loss by tens of dB, so a scale per
data set would leave most samples at zero. The factor is stored per sample as `HT_norm`
(N, 1) float64, so Ha = (x - 0.5) * 2 * HT_norm recovers Sionna's units (path loss and
shadowing included).

Paired UL/DL (`paired_ul_dl=(f_UL, f_DL)` in GHz, e.g. (2.0, 2.1) for the DualNet-MP seed's
UMi): each drop's large-scale parameters and rays (delays, angles, powers, cross-polarisation
ratios) are drawn once, at the DL carrier, and the channel coefficients are computed twice:
with the DL carrier's wavelength, and with the UL carrier's wavelength on the same physical
array (element spacing fixed at half the DL wavelength) and fresh random initial ray phases
(TR 38.901 step 10), as the phases of an FDD pair decorrelate. The file then holds `HT` (DL),
`HT_UL` (UL) and `HT_norm` = the larger of the two peaks, the shared scale (see
`csideploy.calibration.paired`). Pathloss and shadowing are the DL carrier's for both (the
0.2 - 0.4 dB path-loss difference of a 5 % duplex gap is ignored). This reuses the rays of a
DL call through Sionna internals (tested with sionna-no-rt 2.2).

Writing a data set (splits, manifest, memory, output layout): `sionna_dataset`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from csideploy.calibration.paired import (
    progress_bar,
)
from csideploy.errors import CsiDeployError, MissingDependencyError

SIONNA_EXTRA_HINT = "pip install 'csideploy[sionna]'"
SCENARIOS = ("uma", "umi", "rma")
ARRAYS = ("ula", "upa-xpol")
NORM_VARIABLE = "HT_norm"
GRID = 32
N_FREQ = 125
RHO_FFT = 257
DEFAULT_CHUNK = 256
BS_HEIGHT_M = {"uma": 25.0, "umi": 10.0, "rma": 10.0}
"""BS heights of the LORA paper's QuaDRiGa scenarios."""
GENERATOR_ID = "csideploy.sionna/1"


@dataclass(frozen=True)
class SionnaConfig:
    """One 38.901 data set's settings (see the module docstring)."""

    scenario: str = "uma"
    los: bool | None = False
    """True / False force LoS / NLoS; None draws it with the scenario's LoS probability."""
    carrier_ghz: float = 3.5
    subcarriers: int = 1024
    spacing_khz: float = 30.0
    antennas: int = GRID
    keep_delay: int = GRID
    ue_speed_kmh: float = 6.0
    array: str = "ula"
    indoor_probability: float = 0.0
    bs_height_m: float | None = None
    paired_ul_dl: tuple[float, float] | None = None
    """(f_UL, f_DL) in GHz; the DL carrier then replaces `carrier_ghz`."""

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if self.array not in ARRAYS:
            raise ValueError(f"array must be one of {ARRAYS}, got {self.array!r}")
        if self.antennas != GRID or self.keep_delay != GRID:
            raise ValueError(
                f"the COST2100 layout is {GRID} antennas x {GRID} delay rows; got antennas="
                f"{self.antennas}, keep_delay={self.keep_delay}"
            )
        if self.subcarriers < self.keep_delay:
            raise ValueError(
                f"subcarriers ({self.subcarriers}) must be >= keep_delay ({self.keep_delay})"
            )
        for name in ("carrier_ghz", "spacing_khz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.ue_speed_kmh) and self.ue_speed_kmh >= 0):
            raise ValueError(f"ue_speed_kmh must be >= 0, got {self.ue_speed_kmh!r}")
        if not 0.0 <= self.indoor_probability <= 1.0:
            raise ValueError(
                f"indoor_probability must be in [0, 1], got {self.indoor_probability!r}"
            )
        if self.paired_ul_dl is not None:
            pair = tuple(float(f) for f in self.paired_ul_dl)
            if len(pair) != 2 or not all(math.isfinite(f) and f > 0 for f in pair):
                raise ValueError(
                    f"paired_ul_dl must be two positive carriers in GHz (UL, DL), "
                    f"got {self.paired_ul_dl!r}"
                )
            object.__setattr__(self, "paired_ul_dl", pair)

    @property
    def dl_carrier_hz(self) -> float:
        ghz = self.paired_ul_dl[1] if self.paired_ul_dl else self.carrier_ghz
        return ghz * 1e9

    @property
    def ul_carrier_hz(self) -> float | None:
        return None if self.paired_ul_dl is None else self.paired_ul_dl[0] * 1e9

    @property
    def bs_height(self) -> float:
        return self.bs_height_m if self.bs_height_m is not None else BS_HEIGHT_M[self.scenario]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SionnaChunk:
    """One chunk of drops: DL (and UL) CSI (B, 2, 32, 32), per-sample norm (B,), HF or None."""

    start: int
    dl: np.ndarray
    ul: np.ndarray | None
    norm: np.ndarray
    hf: np.ndarray | None


# --------------------------------------------------------------------------- sionna access


def import_sionna() -> SimpleNamespace:
    """The Sionna pieces used here, or MissingDependencyError naming the extra.

    Importing Sionna the first time reseeds torch's global generator; its state is restored.
    """
    import torch

    state = torch.random.get_rng_state()
    try:
        import sionna
        from sionna.phy import config
        from sionna.phy.channel import gen_single_sector_topology, subcarrier_frequencies
        from sionna.phy.channel.tr38901 import PanelArray, RMa, UMa, UMi
    except ImportError as exc:
        raise MissingDependencyError(
            "3GPP TR 38.901 data need Sionna, the optional 'sionna' extra (package "
            f"sionna-no-rt): {SIONNA_EXTRA_HINT} ({exc})"
        ) from None
    finally:
        torch.random.set_rng_state(state)
    return SimpleNamespace(
        version=getattr(sionna, "__version__", "unknown"),
        config=config,
        topology=gen_single_sector_topology,
        frequencies=subcarrier_frequencies,
        models={"uma": UMa, "umi": UMi, "rma": RMa},
        PanelArray=PanelArray,
    )


@contextlib.contextmanager
def _seeded(sn: SimpleNamespace, seed: int) -> Iterator[None]:
    """Seed Sionna; restore torch's global RNG afterwards (Sionna's seed setter reseeds it)."""
    import torch

    state = torch.random.get_rng_state()
    try:
        sn.config.seed = int(seed)
        yield
    finally:
        torch.random.set_rng_state(state)


def _arrays(sn: SimpleNamespace, cfg: SionnaConfig) -> tuple[Any, Any]:
    """(BS array, UE array), both with element spacing set at the DL carrier."""
    fc = cfg.dl_carrier_hz
    if cfg.array == "ula":
        bs = sn.PanelArray(
            num_rows_per_panel=1,
            num_cols_per_panel=GRID,
            polarization="single",
            polarization_type="V",
            antenna_pattern="38.901",
            carrier_frequency=fc,
        )
    else:
        bs = sn.PanelArray(
            num_rows_per_panel=4,
            num_cols_per_panel=4,
            polarization="dual",
            polarization_type="cross",
            antenna_pattern="38.901",
            carrier_frequency=fc,
        )
    ue = sn.PanelArray(
        num_rows_per_panel=1,
        num_cols_per_panel=1,
        polarization="single",
        polarization_type="V",
        antenna_pattern="omni",
        carrier_frequency=fc,
    )
    return bs, ue


def _model(sn: SimpleNamespace, cfg: SionnaConfig, carrier_hz: float, arrays: tuple[Any, Any]):
    bs, ue = arrays
    cls = sn.models[cfg.scenario]
    kwargs: dict[str, Any] = {
        "carrier_frequency": carrier_hz,
        "ut_array": ue,
        "bs_array": bs,
        "direction": "downlink",
    }
    if cfg.scenario != "rma":
        kwargs["o2i_model"] = "low"
    return cls(**kwargs)


def _reuse_rays(ul_model: Any, dl_model: Any, rays: Any) -> None:
    """Make `ul_model` use `dl_model`'s LSPs and these rays for its next call."""
    import torch

    class _FixedRays(torch.nn.Module):
        def forward(self, _lsp: Any) -> Any:
            return rays

        def topology_updated_callback(self) -> None:
            return None

        def reset_topology(self) -> None:
            return None

    try:
        ul_model._lsp = dl_model._lsp
        ul_model._ray_sampler = _FixedRays()
    except AttributeError as exc:  # pragma: no cover - depends on the installed Sionna
        raise CsiDeployError(
            f"paired UL/DL generation relies on Sionna 2.x internals that changed ({exc}); "
            "tested with sionna-no-rt 2.2"
        ) from None


def _frequency_response(a: Any, tau: Any, freqs_hz: Any) -> Any:
    """H (B, ant, K) = sum_p a[b, ant, p] exp(-j 2 pi f_k tau[b, p]), complex64."""
    import torch

    a = a[:, 0, 0, 0, :, :, 0]  # (B, ant, P): one UE antenna, one BS, one snapshot
    tau = tau[:, 0, 0, :].to(torch.float64)  # (B, P)
    phase = -2.0 * math.pi * tau[..., None] * freqs_hz.to(torch.float64)  # (B, P, K)
    steer = torch.polar(torch.ones_like(phase), phase).to(torch.complex64)
    return torch.bmm(a.to(torch.complex64), steer)


def _angular_delay(h: Any) -> Any:
    """Ha (B, 32 angle, 32 delay): DFT across antennas (bins centred, zero angle in the
    middle), inverse DFT across subcarriers."""
    import torch

    angle = torch.fft.fftshift(torch.fft.fft(h, dim=1), dim=1)
    return torch.fft.ifft(angle, dim=2)[:, :, :GRID]


def _peak(ha: np.ndarray) -> np.ndarray:
    """Largest |Re| or |Im| of each sample (B,), float64: the released convention's scale."""
    flat = ha.reshape(len(ha), -1)
    return np.maximum(np.abs(flat.real).max(axis=1), np.abs(flat.imag).max(axis=1)).astype(
        np.float64
    )


def _csi_rows(ha: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """0.5 + Ha / (2 norm) as float32 (B, 2, 32, 32)."""
    scaled = ha / (2.0 * norm[:, None, None])
    x = np.stack([scaled.real, scaled.imag], axis=1).astype(np.float32) + np.float32(0.5)
    return np.clip(x, 0.0, 1.0, out=x)


def _rho_grid(cfg: SionnaConfig) -> np.ndarray:
    """Baseband frequencies of the rho grid: subcarrier index 1024 m / 257, m = 0..124."""
    k = cfg.subcarriers * np.arange(N_FREQ) / RHO_FFT
    return (k - cfg.subcarriers // 2) * cfg.spacing_khz * 1e3


def sionna_chunks(
    n: int,
    config: SionnaConfig,
    *,
    seed: int = 0,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = False,
    with_freq: bool = False,
    desc: str = "sionna",
) -> Iterator[SionnaChunk]:
    """Generate `n` drops, `chunk` at a time (deterministic for a given seed and chunk)."""
    import torch

    sn = import_sionna()
    if isinstance(n, bool) or int(n) < 1 or isinstance(chunk, bool) or int(chunk) < 1:
        raise ValueError(f"n and chunk must be positive integers, got n={n!r}, chunk={chunk!r}")
    n, chunk = int(n), int(chunk)
    speed = config.ue_speed_kmh / 3.6
    with _seeded(sn, seed), torch.no_grad(), progress_bar(n, progress, desc) as bar:
        arrays = _arrays(sn, config)
        dl_model = _model(sn, config, config.dl_carrier_hz, arrays)
        ul_model = None
        if config.ul_carrier_hz is not None:
            ul_model = _model(sn, config, config.ul_carrier_hz, arrays)
            dl_model.return_rays = True
        freqs = sn.frequencies(config.subcarriers, config.spacing_khz * 1e3)
        rho_freqs = torch.as_tensor(_rho_grid(config))
        los: Any = "random" if config.los is None else bool(config.los)
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            if start and size != chunk:  # Sionna keeps topology shapes: reset for the last chunk
                for model in (dl_model, ul_model):
                    if model is not None:
                        model.reset_topology()
            topology = sn.topology(
                size,
                1,
                config.scenario,
                bs_height=config.bs_height,
                indoor_probability=config.indoor_probability,
                min_ut_velocity=speed,
                max_ut_velocity=speed,
            )
            dl_model.set_topology(*topology, los=los)
            out = dl_model(num_time_samples=1, sampling_frequency=1.0)
            a, tau = out[0], out[1]
            h_dl = _frequency_response(a.cpu(), tau.cpu(), freqs.cpu())
            ha_dl = _angular_delay(h_dl).numpy()
            norm = _peak(ha_dl)
            ha_ul = None
            if ul_model is not None:
                ul_model.set_topology(*topology, los=dl_model._scenario.los)
                _reuse_rays(ul_model, dl_model, out[2])
                a_ul, tau_ul = ul_model(num_time_samples=1, sampling_frequency=1.0)
                ha_ul = _angular_delay(
                    _frequency_response(a_ul.cpu(), tau_ul.cpu(), freqs.cpu())
                ).numpy()
                norm = np.maximum(norm, _peak(ha_ul))
            norm = np.where(norm > 0, norm, 1.0)
            hf = None
            if with_freq:
                angle = torch.fft.fftshift(
                    torch.fft.fft(a.cpu()[:, 0, 0, 0, :, :, 0], dim=1), dim=1
                )[:, None, None, None, :, :, None]
                hf = _frequency_response(angle, tau.cpu(), rho_freqs).numpy()
                hf = (hf / (2.0 * norm[:, None, None])).astype(np.complex64)
            yield SionnaChunk(
                start=start,
                dl=_csi_rows(ha_dl, norm),
                ul=None if ha_ul is None else _csi_rows(ha_ul, norm),
                norm=norm,
                hf=hf,
            )
            bar.update(size)
