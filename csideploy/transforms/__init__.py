"""Encoder surgery for mobile CPUs, on `nn.Module`s, before export.

- `replace_sigmoid` / `hard_sigmoid_study`: sigmoid -> relu6(x + 3) / 6, with the NMSE cost
  before and after a short fine-tune.
- `fold_batchnorm` / `fold_batchnorm_report`: inference-mode BatchNorm folded into the
  convolution that feeds it.
- `linearize_pointwise_convs`: CLNet's kernel-1 Conv1d "FC in disguise" as a Linear layer, so
  that it exports as Gemm and quantises as an FC layer.

The FC-free convolutional-latent models (`csinet-cl`, `crnet-cl`, `clnet-cl`, `cllwcsinet`)
are zoo entries, built with `csideploy.models.build`; the AWGN feedback channel and the SNR
sweep live in `csideploy.models.noise`.
"""

from csideploy.transforms.bn_fold import (
    BatchNormFoldReport,
    DelayAffine,
    FoldedPair,
    NotFolded,
    fold_batchnorm,
    fold_batchnorm_report,
    fold_conv_bn,
)
from csideploy.transforms.hard_sigmoid import (
    SCOPES,
    Replacement,
    SubstitutionReport,
    find_sigmoids,
    replace_sigmoid,
)
from csideploy.transforms.hard_sigmoid_study import (
    HardSigmoidResult,
    hard_sigmoid_study,
    model_nmse_db,
)
from csideploy.transforms.linearize import (
    LinearizeReport,
    PointwiseLinear,
    linearize_pointwise_convs,
)

__all__ = [
    "SCOPES",
    "BatchNormFoldReport",
    "DelayAffine",
    "FoldedPair",
    "HardSigmoidResult",
    "LinearizeReport",
    "NotFolded",
    "PointwiseLinear",
    "Replacement",
    "SubstitutionReport",
    "find_sigmoids",
    "fold_batchnorm",
    "fold_batchnorm_report",
    "fold_conv_bn",
    "hard_sigmoid_study",
    "linearize_pointwise_convs",
    "model_nmse_db",
    "replace_sigmoid",
]
