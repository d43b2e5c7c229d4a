"""The papers' training recipe, for making checkpoints and fine-tuning transformed models.

Recipe (CRNet / CLNet): Adam with betas (0.9, 0.999), MSE between the reconstruction and the
input, batch 200, Xavier-uniform conv / linear weights with BatchNorm at weight 1 / bias 0, and
a learning rate warmed up linearly from 0 to 2e-3 then cosine-annealed to 5e-5, stepped every
iteration. `fit` is the reusable core (an in-memory model and arrays); `train` builds the
model, loads the data and writes a project checkpoint.

Training is resumable: after every epoch the full state is written next to the output as
`<out>.resume` (`csideploy.train.resume`). Under torchrun every process runs the same loop on
its share of each global batch (`csideploy.train.distributed`); rank 0 alone writes.

Options of a run beyond the recipe: build options of the model (LORA's `quantizer` and `bits`;
checked against what the model's builder takes and stored in the checkpoint so that it
reloads the same model) and `TrainConfig.train_snr_db`, AWGN on the codeword in training mode
only (CLLWCsiNet's own channel, a build option; a decoder hook for the other models, removed
after the run). DualNet-MP trains with its two-stage recipe (`csideploy.train.paired`) on
paired UL/DL files (`HT` and `HT_UL`), and reports validation NMSE with the UL side
information; it keeps no resumable state.

Modules: `config` (TrainConfig, LrSchedule, TrainResult), `loop` (fit, finetune), `resume`,
`run` (train), `options` (build options, initial weights), `run_info` (checkpoint metadata),
`paired` (DualNet-MP), `init` (initialisation), `distributed`, `sync_norm`.
"""

from csideploy.train.config import (
    DEVICES,
    NMSE_CONVENTION,
    PAIRED_DATA_HINT,
    SCHEDULERS,
    LrSchedule,
    TrainConfig,
    TrainResult,
    is_paired,
    resolve_device,
)
from csideploy.train.init import OUTPUT_PATH_BN_WEIGHT, init_weights, output_path_norms
from csideploy.train.loop import finetune, fit
from csideploy.train.options import build_for_training, model_options
from csideploy.train.resume import RESUME_FORMAT, RESUME_VERSION, resume_path
from csideploy.train.run import train

__all__ = [
    "DEVICES",
    "NMSE_CONVENTION",
    "OUTPUT_PATH_BN_WEIGHT",
    "PAIRED_DATA_HINT",
    "RESUME_FORMAT",
    "RESUME_VERSION",
    "SCHEDULERS",
    "LrSchedule",
    "TrainConfig",
    "TrainResult",
    "build_for_training",
    "finetune",
    "fit",
    "init_weights",
    "is_paired",
    "model_options",
    "output_path_norms",
    "resolve_device",
    "resume_path",
    "train",
]
