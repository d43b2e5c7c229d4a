"""DualNet-MP: magnitude and phase branches, SSQ codewords, sign bits, the UL magnitude at the BS.

`model` holds the networks, `handset` what the UE graph and the feedback payload need,
`recipe` the two-stage training, `entry` the registration.
"""

from csideploy.models.zoo.dualnet_mp.entry import dualnet_mp, make_dualnet_mp
from csideploy.models.zoo.dualnet_mp.handset import (
    UL_SIDE_INPUT,
    FeedbackBits,
    feedback_bits,
    fit_magnitude_gain,
    fit_sign_positions,
    param_breakdown,
    ue_encoder,
    ue_graph,
)
from csideploy.models.zoo.dualnet_mp.layers import (
    PAPER_PARAMS_CR8,
    CircularConv2d,
    DualNetMPConfig,
    circular_pad,
)
from csideploy.models.zoo.dualnet_mp.model import DualNetMP, csi_features, ul_magnitude
from csideploy.models.zoo.dualnet_mp.recipe import (
    DualNetMPTrainResult,
    smape_loss,
    train_dualnet_mp,
)

__all__ = [
    "PAPER_PARAMS_CR8",
    "UL_SIDE_INPUT",
    "CircularConv2d",
    "DualNetMP",
    "DualNetMPConfig",
    "DualNetMPTrainResult",
    "FeedbackBits",
    "circular_pad",
    "csi_features",
    "dualnet_mp",
    "feedback_bits",
    "fit_magnitude_gain",
    "fit_sign_positions",
    "make_dualnet_mp",
    "param_breakdown",
    "smape_loss",
    "train_dualnet_mp",
    "ue_encoder",
    "ue_graph",
    "ul_magnitude",
]
