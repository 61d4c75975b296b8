"""Prompted maskers (SAM, random walker) behind one contract."""

from .base import Masker, MaskerSession, SlicePrompt, check_batch
from .registry import MASKERS, SPECS, MaskerSpec, build_masker, masker_spec, register

__all__ = ["Masker", "MaskerSession", "SlicePrompt", "check_batch", "MASKERS", "SPECS", "MaskerSpec",
           "build_masker", "masker_spec", "register"]
