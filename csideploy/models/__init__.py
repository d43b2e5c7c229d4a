"""The zoo: `build(name, cr)`, `list_models()`, checkpoint loading and model figures."""

from csideploy.models import zoo  # noqa: F401  (registers every family)
from csideploy.models.checkpoint import (
    LoadedCheckpoint,
    default_checkpoint_path,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from csideploy.models.registry import (
    CsiAutoencoder,
    InputSpec,
    ModelEntry,
    PublishedFigures,
    build,
    get_entry,
    list_models,
    register_model,
)

__all__ = [
    "CsiAutoencoder",
    "InputSpec",
    "LoadedCheckpoint",
    "ModelEntry",
    "PublishedFigures",
    "build",
    "default_checkpoint_path",
    "get_entry",
    "list_models",
    "load_checkpoint",
    "load_model",
    "register_model",
    "save_checkpoint",
]
