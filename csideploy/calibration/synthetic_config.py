"""Parameters of the built-in clustered multipath model and its `indoor` / `outdoor` presets.

See `csideploy.calibration.synthetic` for the model; the presets are tuned so that trained
CRNet weights score on the built-in data about what they score on COST2100-model data
(`docs/data.md` has the figures).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the clustered multipath model (see the module docstring).

    Every sample is scaled by its own largest component (the released convention), so the
    configuration holds no scale.
    """

    name: str = "custom"
    carrier_hz: float = 5.3e9
    bandwidth_hz: float = 20e6
    clusters_min: int = 2
    clusters_max: int = 4
    subpaths: int = 10
    sector_deg: float = 120.0
    angular_spread_deg: float = 4.0
    cluster_delay_ns: float = 25.0
    intra_delay_spread_ns: float = 5.0
    pdp_decay_ns: float = 20.0
    shadowing_db: float = 3.0
    first_arrival_ns: float = 50.0
    first_arrival_min_ns: float = 0.0

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        """ValueError naming the first field out of its range."""
        positive = ("carrier_hz", "bandwidth_hz", "sector_deg", "pdp_decay_ns")
        non_negative = (
            "angular_spread_deg",
            "cluster_delay_ns",
            "intra_delay_spread_ns",
            "shadowing_db",
            "first_arrival_ns",
            "first_arrival_min_ns",
        )
        for name in positive:
            _check_number(name, getattr(self, name), strictly_positive=True)
        for name in non_negative:
            _check_number(name, getattr(self, name), strictly_positive=False)
        for name in ("clusters_min", "clusters_max", "subpaths"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SyntheticConfig.{name} must be an integer >= 1, got {value!r}")
        if self.clusters_min > self.clusters_max:
            raise ValueError(
                f"SyntheticConfig.clusters_min ({self.clusters_min}) exceeds "
                f"clusters_max ({self.clusters_max})"
            )
        if self.first_arrival_min_ns > self.first_arrival_ns:
            raise ValueError(
                f"SyntheticConfig.first_arrival_min_ns ({self.first_arrival_min_ns}) exceeds "
                f"first_arrival_ns ({self.first_arrival_ns})"
            )
        if self.sector_deg > 180.0:
            raise ValueError(f"SyntheticConfig.sector_deg must be <= 180, got {self.sector_deg}")

    @classmethod
    def preset(cls, name: str) -> SyntheticConfig:
        """The `indoor` (5.3 GHz picocell) or `outdoor` (300 MHz rural) preset."""
        key = {"in": "indoor", "out": "outdoor"}.get(name.lower(), name.lower())
        if key not in PRESETS:
            raise ValueError(f"unknown synthetic scenario {name!r}; expected indoor or outdoor")
        return _preset(key)

    @property
    def paths(self) -> int:
        """Sub-paths per sample, inactive clusters included (they carry zero power)."""
        return self.clusters_max * self.subpaths

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_number(name: str, value: Any, *, strictly_positive: bool) -> None:
    """ValueError unless `value` is a finite real number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if strictly_positive else value >= 0)
    if not ok:
        bound = "> 0" if strictly_positive else ">= 0"
        raise ValueError(f"SyntheticConfig.{name} must be a finite number {bound}, got {value!r}")


PRESETS: dict[str, dict[str, Any]] = {
    # 5.3 GHz indoor picocell: few clusters, tens of ns of delay spread -> first delay columns.
    "indoor": {
        "name": "indoor",
        "carrier_hz": 5.3e9,
        "clusters_min": 2,
        "clusters_max": 4,
        "subpaths": 10,
        "sector_deg": 120.0,
        "angular_spread_deg": 4.0,
        "cluster_delay_ns": 25.0,
        "intra_delay_spread_ns": 5.0,
        "pdp_decay_ns": 20.0,
        "shadowing_db": 3.0,
        "first_arrival_ns": 50.0,
    },
    # 300 MHz semi-urban / rural macro cell (COST2100 SemiUrban_300MHz, UE anywhere in a 400 m
    # square): unsynchronised timing, the first arrival is the UE's distance (60-270 m ->
    # 200-900 ns, delay columns 4-18); one to three far clusters, narrow in angle seen from the
    # BS, angles over the whole half-plane (most near endfire, as with uniform azimuths).
    "outdoor": {
        "name": "outdoor",
        "carrier_hz": 300e6,
        "clusters_min": 1,
        "clusters_max": 3,
        "subpaths": 10,
        "sector_deg": 180.0,
        "angular_spread_deg": 1.0,
        "cluster_delay_ns": 300.0,
        "intra_delay_spread_ns": 5.0,
        "pdp_decay_ns": 100.0,
        "shadowing_db": 6.0,
        "first_arrival_ns": 900.0,
        "first_arrival_min_ns": 200.0,
    },
}


@functools.cache
def _preset(key: str) -> SyntheticConfig:
    """The preset `key`, built once."""
    return SyntheticConfig(**PRESETS[key])
