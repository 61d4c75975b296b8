"""Training stage: students from the store's labels, its unlabeled volumes (Mean Teacher) and a
round's pseudo-labels (confidence-weighted SAM consistency); metrics for evaluation."""

from .checkpoint import load_state, state_path
from .mean_teacher import TrainResult, train_student
from .metrics import METRICS, asd, case_metrics, dice, hd95, jaccard, largest_component

__all__ = [
    "METRICS",
    "TrainResult",
    "asd",
    "case_metrics",
    "dice",
    "hd95",
    "jaccard",
    "largest_component",
    "load_state",
    "state_path",
    "train_student",
]
