"""Prompted maskers (SAM, random walker) behind one contract."""

from .base import Masker, SlicePrompt
from .registry import MASKERS, build_masker

__all__ = ["Masker", "SlicePrompt", "MASKERS", "build_masker"]
