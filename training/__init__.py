"""Training stage (`vlmcap train`): projector and LoRA training on video/caption manifests (docs/TRAINING.md)."""
