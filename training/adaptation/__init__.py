"""Masker adaptation: tune a SAM-family masker's decoder side on the store's labeled slices
(`adapt_masker`, ``semisam adapt``), so that its pseudo-labels carry the student further."""

from .trainer import AdaptResult, adapt_masker

__all__ = ["AdaptResult", "adapt_masker"]
