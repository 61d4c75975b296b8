"""One loaded student: its network, spec, checkpoint meta and the classes it predicts in.

Every stage that runs a trained student (a round's worker, inspect/gain panels, evaluate,
predict) loads it with `Student.load` and asks it the same questions:

- which class map its checkpoint records (`Student.trained_classes`) and which it predicts in
  (`Student.classes`: None for a one-structure student);
- whether it fits a store of ``K`` structures (`Student.check_channels`: ``K + 1`` output
  channels; `Student.check_fits`: the channels and, where the checkpoint records a class map,
  the store's map);
- its probabilities for 1..K classes (`Student.probabilities`: ``XxYxZ`` foreground for one
  structure, the ``(K+1)xXxYxZ`` softmax for ``K > 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from semisam.schemas import (
    CheckpointError,
    ClassMap,
    InputError,
    StudentInferenceConfig,
    StudentSpec,
    first_validation_error,
)

from .student import (
    check_student_classes,
    load_student,
    predict_probabilities,
    predict_probability,
    safe_flip_axes,
    show_classes,
)

CLASSES_META_KEY = "classes"
"""Student checkpoint ``meta`` key: the class map (``{"value": "name"}``) it was trained on;
written by ``semisam train`` for multi-class stores."""


def checkpoint_classes(meta: dict, path: Path | str) -> ClassMap | None:
    """The class map a student checkpoint's ``meta`` records; None when it records none (a
    student of a one-structure store, or one trained before class maps).

    Raises:
        CheckpointError: ``meta["classes"]`` is not a valid class map (one line naming ``path``).
    """
    raw = meta.get(CLASSES_META_KEY)
    if raw is None:
        return None
    try:
        return ClassMap(names={int(k): v for k, v in dict(raw).items()})
    except ValidationError as exc:
        detail = first_validation_error(exc)
    except (ValueError, TypeError, AttributeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise CheckpointError(f"{path}: meta 'classes' is not a valid class map ({detail})")


def predicted_classes(spec: StudentSpec, meta: dict, path: Path | str) -> ClassMap | None:
    """The class map a student predicts in: None for a one-structure student (2 channels, no
    map or a one-class map), else the map its checkpoint's ``meta`` records.

    Raises:
        CheckpointError: more than 2 channels without a class map, a map that does not fit the
            channels (``K + 1``), or an invalid map (one line naming ``path``).
    """
    classes, channels = checkpoint_classes(meta, path), spec.out_channels
    if classes is None or not classes.multiclass:
        if channels != 2:
            raise CheckpointError(f"{path}: {channels} output channels but no class map in its "
                                  "meta: which label value each channel is is unknown (train "
                                  "it with semisam train on a multi-class store)")
        return None
    if channels != classes.count + 1:
        raise CheckpointError(f"{path}: {channels} output channels, but its class map "
                              f"({show_classes(classes)}) has {classes.count} structure(s): it "
                              f"needs {classes.count + 1}")
    return classes


@dataclass(frozen=True)
class Student:
    """A student checkpoint loaded in eval mode on ``device``.

    Attributes:
        model: the network (``Bx1xXxYxZ`` -> ``Bx{spec.out_channels}xXxYxZ`` logits).
        spec: its `StudentSpec`.
        meta: the checkpoint's free JSON ``meta``.
        path: the checkpoint file (named in every error).
        device: where the model's weights are.
    """

    model: torch.nn.Module
    spec: StudentSpec
    meta: dict
    path: Path
    device: torch.device

    @classmethod
    def load(cls, path: Path | str, device: torch.device | str = "cpu") -> Student:
        """Load a checkpoint written by `save_student` (``weights_only``).

        Raises:
            CheckpointError: missing, unreadable, unsafe, or not a semisam student checkpoint.
        """
        model, spec, meta = load_student(Path(path), device)
        return cls(model, spec, meta, Path(path), torch.device(device))

    @property
    def trained_classes(self) -> ClassMap | None:
        """The class map the checkpoint records (None: none recorded).

        Raises:
            CheckpointError: an invalid recorded map.
        """
        return checkpoint_classes(self.meta, self.path)

    @property
    def classes(self) -> ClassMap | None:
        """The class map it predicts in (`predicted_classes`): None for a one-structure student.

        Raises:
            CheckpointError: see `predicted_classes`.
        """
        return predicted_classes(self.spec, self.meta, self.path)

    def check_channels(self, classes: ClassMap) -> None:
        """``K + 1`` output channels for a store of ``K`` structures (`check_student_classes`).

        Raises:
            InputError: one line naming the checkpoint, its channels and the store's classes.
        """
        check_student_classes(self.spec, classes, self.path)

    def check_fits(self, classes: ClassMap, store: str = "") -> None:
        """A multi-class store's student has ``K + 1`` channels, and a student that records a
        class map where either is multi-class records the store's (same value -> name pairs),
        so that channel ``c`` is read as the structure it learnt.

        Args:
            classes: the store's class map.
            store: the store named in the message ("the store" when empty).

        Raises:
            InputError: one line naming the checkpoint and the channel count or both maps.
        """
        if classes.multiclass:
            self.check_channels(classes)
        trained = self.trained_classes
        if trained is None or trained == classes or not (trained.multiclass or classes.multiclass):
            return
        where = f"store {store}" if store else "the store"
        raise InputError(f"student {self.path}: trained on classes ({show_classes(trained)}), "
                         f"but {where} has ({show_classes(classes)}); its channels would be "
                         "read as other structures")

    def safe_flips(self, config: StudentInferenceConfig) -> tuple[StudentInferenceConfig,
                                                                    tuple[int, ...]]:
        """``config`` without the flips along axes the checkpoint records as ordering its
        structures (`safe_flip_axes`), and the axes left out."""
        kept, dropped = safe_flip_axes(config.flip_axes, self.meta)
        return (config.model_copy(update={"flip_axes": kept}) if dropped else config), dropped

    def probabilities(self, image: np.ndarray, config: StudentInferenceConfig,
                      classes: ClassMap | None = None) -> np.ndarray:
        """The student's sliding-window probabilities of ``image`` (``XxYxZ`` raw intensities).

        Returns:
            ``classes`` None or one structure: ``XxYxZ`` float32 foreground probability;
            ``K > 1`` structures: the ``(K+1)xXxYxZ`` float32 softmax (channel ``c`` the class
            value ``classes.values[c - 1]``, channel 0 the background).
        """
        if classes is None or not classes.multiclass:
            return predict_probability(self.model, image, self.spec, config, self.device)
        return predict_probabilities(self.model, image, self.spec, config, self.device)


__all__ = ["CLASSES_META_KEY", "Student", "checkpoint_classes", "predicted_classes"]
