"""Every model family, imported once so that their `register_model` decorators run.

The one list of families: adding a model is a module here plus one line below.
"""

from csideploy.models.zoo import (  # noqa: F401
    cllwcsinet,
    clnet,
    conv_latent,
    crnet,
    csinet,
    dualnet_mp,
    lora,
)
