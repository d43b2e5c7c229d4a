"""What model a run trains: build options checked against the model's builder, and the initial
weights (a copy of a given model, or the papers' initialisation seeded by the config)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import torch

from csideploy.errors import CheckpointError, CsiDeployError
from csideploy.models.registry import CsiAutoencoder, build, get_entry, list_models
from csideploy.train.config import CLI_FLAGS, TrainConfig, is_paired
from csideploy.train.init import init_weights


def model_options(
    model_name: str, options: Mapping[str, Any] | None = None, train_snr_db: float | None = None
) -> dict[str, Any]:
    """Build options for a training run of `model_name`, checked against its builder.

    An option the builder does not take is an error naming the models that take it.
    `train_snr_db` becomes a build option for a model with its own training channel
    (CLLWCsiNet); other models get the noise from `fit` instead, and a model trained by
    another recipe (DualNet-MP) cannot take it.
    """
    chosen = {k: v for k, v in (options or {}).items() if v is not None}
    accepted = _builder_options(model_name)
    for key in chosen:
        if key not in accepted:
            takers = [n for n in list_models() if key in _builder_options(n)]
            raise CsiDeployError(
                f"model {model_name!r} takes no option {key!r} ({_flag(key)}); "
                f"models that take it: {', '.join(takers) or 'none'}"
            )
    if "bits" in chosen and chosen.get("quantizer") is None and "quantizer" in accepted:
        raise CsiDeployError("--bits sets the codeword quantizer's width; give --quantizer too")
    if train_snr_db is not None:
        if is_paired(model_name):
            takers = [n for n in list_models() if not is_paired(n)]
            raise CsiDeployError(
                f"--train-snr is not supported for {model_name}: its two-stage recipe decodes "
                f"the quantized levels and sign bits branch by branch; models that take it: "
                f"{', '.join(takers)}"
            )
        if "train_snr_db" in accepted:
            given = chosen.get("train_snr_db", train_snr_db)
            if given != train_snr_db:
                raise CsiDeployError(
                    f"train_snr_db option {given} dB conflicts with --train-snr {train_snr_db}"
                )
            chosen["train_snr_db"] = train_snr_db
    return chosen


def build_for_training(name: str, cr: int, options: Mapping[str, Any]) -> CsiAutoencoder:
    """`build(name, cr, **options)`, with options errors made clear and the options recorded.

    The model's `build_options` (what `save_checkpoint` stores and checkpoint loading passes
    back to `build`) gets every given option, so that the checkpoint reloads the same model
    also when the builder does not record them itself.
    """
    try:
        model = build(name, cr, **options)
    except CsiDeployError:
        raise
    except (TypeError, ValueError) as error:
        raise CsiDeployError(
            f"cannot build {name} CR 1/{cr} with {dict(options)}: {error}"
        ) from None
    recorded = {**options, **(getattr(model, "build_options", None) or {})}
    if recorded:
        model.build_options = recorded
    return model


def initial_model(
    model_name: str,
    cr: int,
    config: TrainConfig,
    options: Mapping[str, Any] | None,
    init_from: CsiAutoencoder | None,
) -> CsiAutoencoder:
    """A copy of `init_from`, or a fresh model with the papers' init, seeded by the config."""
    if init_from is not None:
        if (init_from.model_name, init_from.cr) != (model_name, cr):
            raise CheckpointError(
                f"init_from is {init_from.model_name} CR 1/{init_from.cr}, "
                f"but training {model_name} CR 1/{cr} was requested"
            )
        if options:
            raise CheckpointError("init_from keeps its own build options; give no options")
        return copy.deepcopy(init_from)
    chosen = model_options(model_name, options, config.train_snr_db)
    torch.manual_seed(config.seed)
    return init_weights(build_for_training(model_name, cr, chosen))


def _builder_options(model_name: str) -> frozenset[str]:
    """Keyword options the registered builder of `model_name` takes besides the CR."""
    parameters = list(inspect.signature(get_entry(model_name).builder).parameters.values())
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters[1:] if p.kind in kinds)


def _flag(option: str) -> str:
    return CLI_FLAGS.get(option, "--" + option.replace("_", "-"))
