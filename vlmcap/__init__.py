"""vlmcap: bulk video captioning with a LLaVA-style vision-language model."""

__version__ = "0.1.0"
