"""Training stage: fits students from the store's labels (and, later, its pseudo-label rounds)."""

from .supervised import fit_supervised, load_labeled

__all__ = ["fit_supervised", "load_labeled"]
