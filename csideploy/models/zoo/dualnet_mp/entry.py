"""DualNet-MP's registry entry."""

from __future__ import annotations

from csideploy.models.registry import (
    InputSpec,
    register_model,
)
from csideploy.models.zoo.dualnet_mp.handset import (
    UL_SIDE_INPUT,
    ue_graph,
)
from csideploy.models.zoo.dualnet_mp.layers import (
    PHASE_CRS,
    DualNetMPConfig,
)
from csideploy.models.zoo.dualnet_mp.model import (
    DualNetMP,
)
from csideploy.models.zoo.dualnet_mp.recipe import train_dualnet_mp


def make_dualnet_mp(config: DualNetMPConfig) -> DualNetMP:
    """A DualNet-MP from a validated config."""
    return DualNetMP(config)


@register_model(
    "dualnet-mp",
    summary="DualNet-MP: magnitude/phase C-CNN branches, SSQ, sign bits, UL magnitude at BS",
    codeword_key="encoder.phase.fc.weight",
    crs=PHASE_CRS,
    input_spec=InputSpec(
        description=(
            "DL angular-delay CSI, channels (real, imag) x 32 angle x 32 delay, scaled to "
            "[0, 1] with 0.5 meaning zero; the BS decoder also takes the UL CSI in the same "
            "layout as side information"
        )
    ),
    ue_graph=ue_graph,
    side_input=UL_SIDE_INPUT,
    paired_recipe=train_dualnet_mp,
)
def dualnet_mp(
    cr: int,
    *,
    magnitude_reduction: int = 4,
    phase_bits: int = 8,
    magnitude_bits: int = 8,
    sign_ratio: float | None = None,
) -> DualNetMP:
    """DualNet-MP with phase compression 1/cr (the registry CR) and the given options, which
    are kept on the model as `build_options`."""
    model = make_dualnet_mp(
        DualNetMPConfig(
            phase_reduction=cr,
            magnitude_reduction=magnitude_reduction,
            phase_bits=phase_bits,
            magnitude_bits=magnitude_bits,
            sign_ratio=sign_ratio,
        )
    )
    model.build_options = {
        "magnitude_reduction": magnitude_reduction,
        "phase_bits": phase_bits,
        "magnitude_bits": magnitude_bits,
        "sign_ratio": sign_ratio,
    }
    return model
