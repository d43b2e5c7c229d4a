"""The zoo: `build(name, cr)`, `list_models()`, checkpoint loading and model figures."""

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
    "ModelEntry",
    "PublishedFigures",
    "build",
    "get_entry",
    "list_models",
    "register_model",
]
