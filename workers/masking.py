"""Step 3 of a volume: the masker on each structure's prompted slices, axis by axis.

A volume of ``K`` structures has, per slice axis, the union of the slices any structure
prompts (`AxisStack`, windowed to uint8 once). With ``K > 1`` each axis's stack is bound to one
masker session (`share_stacks`: SAM-family maskers encode every slice once for all classes) and
each class reaches its own slices through a view of it; with one structure the class's slices
are the whole stack and the masker is called on them directly, in its own batches (one
session decode of the whole stack would batch the decoder differently).

Per class and axis (`mask_axis`): the masker on all prompted slices with the student's boxes,
or (``prompts.propagate``) on the slices reached by box propagation from chosen start slices
(`semisam.workers.propagation`). The answer is a `MaskerView` (slice indices, ``NxHxW``
probabilities, the masker's per-slice scores if it has them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semisam.schemas import PromptConfig

from .fusion import MaskerView
from .localization import stack_slices
from .maskers import Masker, MaskerSession, SlicePrompt
from .propagation import choose_starts, largest_starts, propagate_chains

__all__ = ["AxisStack", "ClassPrompts", "ClassSlices", "axis_stacks", "class_slices", "mask_axis",
           "share_stacks"]


@dataclass(frozen=True)
class ClassPrompts:
    """One structure's prompts.

    Attributes:
        prob: ``XxYxZ`` float32 student probability of the structure, in [0, 1].
        mask: ``XxYxZ`` bool student foreground (`foreground_mask`).
        per_axis: slice axis -> prompts in increasing slice order (``prompts.slice_axis``
            first, then ``prompts.extra_axes``; an axis without foreground has none).
    """

    prob: np.ndarray
    mask: np.ndarray
    per_axis: dict[int, list[SlicePrompt]]

    def prompted(self, axis: int) -> list[int]:
        """The slice indices along ``axis`` this structure prompts, increasing."""
        return [p.index for p in self.per_axis[axis]]


@dataclass(frozen=True)
class AxisStack:
    """The slices along one axis that at least one structure prompts.

    Attributes:
        axis: the slice axis.
        indices: N slice indices, increasing (the union over structures).
        slices: ``NxHxW`` uint8 windowed intensities of those slices (`stack_slices` frame).
        session: a masker session over ``slices`` shared by the structures (``K > 1``), or
            None: each structure calls the masker itself.
    """

    axis: int
    indices: list[int]
    slices: np.ndarray
    session: MaskerSession | None = None


@dataclass(frozen=True)
class ClassSlices:
    """One structure's prompted slices of one axis and how the masker reaches them.

    Attributes:
        slices: ``NxHxW`` uint8, one per prompt of the structure on this axis.
        masker: the round's masker.
        session: a view of the axis's shared session restricted to these slices, or None (the
            masker is called on ``slices`` directly).
    """

    slices: np.ndarray
    masker: Masker
    session: MaskerSession | None = None


class _StackView(MaskerSession):
    """One class's prompted slices inside the stack of every class's prompted slices of an
    axis, so that the stack is encoded once for all classes (SAM-family sessions)."""

    def __init__(self, parent: MaskerSession, positions: list[int]) -> None:
        super().__init__(parent.masker, parent.slices[positions])
        self.parent, self.positions = parent, positions

    def mask(self, positions, prompts):
        return self.parent.mask([self.positions[p] for p in positions], prompts)


def axis_stacks(windowed: np.ndarray | None, classes: Sequence[ClassPrompts]) -> list[AxisStack]:
    """Per slice axis (in the classes' ``per_axis`` order) the union of the prompted slices of
    ``windowed`` (``XxYxZ`` uint8; None only when no class prompts any slice); axes no class
    prompts are left out."""
    stacks = []
    for axis in classes[0].per_axis:
        union = sorted({i for c in classes for i in c.prompted(axis)})
        if union:
            assert windowed is not None
            stacks.append(AxisStack(axis, union, stack_slices(windowed, union, axis)))
    return stacks


def share_stacks(stacks: Sequence[AxisStack], masker: Masker) -> list[AxisStack]:
    """``stacks`` each bound to one masker session (the encoding happens here)."""
    return [AxisStack(s.axis, s.indices, s.slices, masker.session(s.slices)) for s in stacks]


def class_slices(stack: AxisStack, prompted: list[int], masker: Masker) -> ClassSlices:
    """A structure's slices ``prompted`` (increasing) of ``stack``: a view of its shared
    session, or without one the stack itself (then ``prompted`` is the whole stack)."""
    if stack.session is None:
        return ClassSlices(stack.slices, masker)
    view = _StackView(stack.session, [stack.indices.index(i) for i in prompted])
    return ClassSlices(view.slices, masker, view)


def mask_axis(target: ClassSlices, prompts: list[SlicePrompt], student: np.ndarray, axis: int,
              cfg: PromptConfig) -> MaskerView:
    """The masker on one structure's prompted slices of ``axis``.

    Without ``cfg.propagate`` every prompted slice with the student's box; with it the slices
    reached by box propagation from ``cfg.propagate_chains`` starts (the chains' soft vote):
    with ``propagate_start`` 'agreement' the slices where masker and student agree best, with
    'largest' the student's largest slices.

    Args:
        target: the structure's slices (one per prompt) and the masker or session to ask.
        prompts: its prompts on ``axis``, increasing slice order.
        student: ``XxYxZ`` bool student foreground of the structure.
        axis: the slice axis.
        cfg: the round's prompt settings.

    Returns:
        The slices masked, their ``NxHxW`` probabilities and scores (None: the masker has none).
    """
    if not cfg.propagate:
        probs, score = (target.session.mask(list(range(len(prompts))), prompts)
                        if target.session is not None
                        else target.masker.mask_slices_scored(target.slices, prompts))
        return MaskerView(axis, [p.index for p in prompts], probs, score)
    fg = stack_slices(student, [p.index for p in prompts], axis)
    areas = fg.reshape(len(prompts), -1).sum(axis=1)
    session = target.session if target.session is not None else target.masker.session(target.slices)
    if cfg.propagate_start == "agreement":
        starts = choose_starts(session, prompts, fg, cfg.propagate_chains,
                               cfg.propagate_chain_spacing)
    else:
        starts = largest_starts(prompts, areas, cfg.propagate_chains, cfg.propagate_chain_spacing)
    positions, probs, score = propagate_chains(session, prompts, areas, cfg.propagate_margin,
                                               starts, within_student=cfg.propagate_within_student,
                                               end=cfg.propagate_end)
    return MaskerView(axis, [prompts[i].index for i in positions], probs, score)
