"""LiteMedSAM (TinyViT encoder at 256x256 + SAM's prompt encoder and mask decoder) as a masker."""

from .checkpoint import load_litemedsam
from .masker import LiteMedSamMasker

__all__ = ["LiteMedSamMasker", "load_litemedsam"]
