"""synth: manufacture synthetic pre-training data for large language models."""

__version__ = "0.1.0"
