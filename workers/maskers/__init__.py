"""Prompted maskers (SAM, random walker) behind one contract."""

from .base import Masker, MaskerSession, SlicePrompt, check_batch
from .registry import MASKERS, build_masker

__all__ = ["Masker", "MaskerSession", "SlicePrompt", "check_batch", "MASKERS", "build_masker"]
