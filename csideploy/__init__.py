"""csideploy: take a trained CSI-feedback autoencoder to a verified UE encoder artifact."""

__version__ = "0.1.0"
