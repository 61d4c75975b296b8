"""Adaptation examples: the labeled (or confidently pseudo-labeled) slices of a store.

A *track* is one structure of one volume along one slice axis: the reference masks of the
slices where the structure is (``structure``), and the slices just past its two ends
(``beyond``: the round's student boxes run there, and the right answer is empty). Each
example is one slice of one track; its image embedding is encoded once and kept in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import zarr

from semisam.schemas import AdaptAugmentConfig, IntensityConfig, StoreError
from semisam.store import read_image, read_label, read_output
from semisam.workers.intensity import window_volume
from semisam.workers.localization import stack_slices

logger = logging.getLogger(__name__)

__all__ = ["Example", "SliceVariant", "Track", "build_tracks", "hold_out", "slice_variants"]


@dataclass
class Track:
    """One structure (class ``value``) of one volume along slice axis ``axis``.

    Attributes:
        masks: slice index -> ``HxW`` bool reference, for the structure's slices.
        structure: sorted slice indices with at least ``min_slice_pixels`` reference pixels.
        beyond: slice indices just past the structure (empty target).
        hw: ``(H, W)`` of the slices along ``axis``.
        source: 'label' or 'round <r>'.
        variant: '' for the slices as stored, else the `SliceVariant` they were made by.
        origin: for a variant, the position of the stored slices' track in the track list
            (its held-out slices are the origin's).
    """

    volume_id: str
    value: int
    axis: int
    masks: dict[int, np.ndarray]
    structure: list[int]
    beyond: list[int]
    hw: tuple[int, int]
    source: str = "label"
    held_out: set[int] = field(default_factory=set)
    variant: str = ""
    origin: int | None = None

    def nearest_structure(self, index: int) -> int:
        """The structure slice nearest to ``index``."""
        return min(self.structure, key=lambda s: (abs(s - index), s))


@dataclass(frozen=True)
class Example:
    """One slice of one track: ``row`` of the embedding table, the slice's target mask."""

    track: int
    index: int
    row: int


@dataclass(frozen=True)
class SliceVariant:
    """A transform of labeled slices made before encoding: a mirror of in-plane axis ``flip``
    (0 = rows, 1 = columns) or the intensity curve ``255 (s / 255) ** gamma``; the slice
    shape is kept."""

    name: str
    flip: int | None = None
    gamma: float | None = None

    def image(self, slices: np.ndarray) -> np.ndarray:
        """``NxHxW`` uint8 windowed slices -> the same, transformed."""
        if self.flip is not None:
            return np.ascontiguousarray(np.flip(slices, axis=self.flip + 1))
        if self.gamma is not None:
            lut = np.round(255.0 * (np.arange(256) / 255.0) ** self.gamma).astype(np.uint8)
            return lut[slices]
        return slices

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """``HxW`` bool reference -> the same, moved as the image is."""
        return np.ascontiguousarray(np.flip(mask, axis=self.flip)) if self.flip is not None else mask

    def track(self, track: Track, origin: int) -> Track:
        """``track`` (at position ``origin`` of the track list) as this variant sees it."""
        return Track(track.volume_id, track.value, track.axis,
                     {i: self.mask(m) for i, m in track.masks.items()}, track.structure,
                     track.beyond, track.hw, track.source, variant=self.name, origin=origin)


def slice_variants(config: AdaptAugmentConfig) -> list[SliceVariant]:
    """The variants ``config`` asks for, flips first."""
    return ([SliceVariant(f"flip{a}", flip=a) for a in config.flips]
            + [SliceVariant(f"gamma{g:g}", gamma=g) for g in config.gammas])


def _track(volume_id: str, value: int, axis: int, label: np.ndarray, min_pixels: int,
           reach: int, source: str) -> Track | None:
    """The track of ``label == value`` along ``axis`` (None if the structure is absent)."""
    view = np.moveaxis(label == value, axis, 0)
    areas = view.reshape(view.shape[0], -1).sum(axis=1)
    structure = [int(i) for i in np.flatnonzero(areas >= min_pixels)]
    if not structure:
        return None
    first, last = structure[0], structure[-1]
    beyond = [i for i in range(first - reach, first) if i >= 0]
    beyond += [i for i in range(last + 1, last + 1 + reach) if i < view.shape[0]]
    beyond = [i for i in beyond if areas[i] == 0]
    return Track(volume_id, value, axis, {i: view[i].copy() for i in structure}, structure,
                 beyond, (int(view.shape[1]), int(view.shape[2])), source)


def build_tracks(root: zarr.Group, volumes: Sequence[tuple[str, str]], values: Sequence[int],
                 axes: Sequence[int], intensity: IntensityConfig, min_pixels: int, reach: int,
                 encode: Callable[[np.ndarray], torch.Tensor],
                 variants: Sequence[SliceVariant] = ()
                 ) -> tuple[list[Track], list[Example], torch.Tensor]:
    """Tracks, examples and their embeddings.

    Args:
        root: the store.
        volumes: ``(volume_id, source)`` pairs; source 'label' reads ``volumes/<id>/label``,
            'round <r>' reads round r's pseudo-label.
        values: class values (1 for a one-structure store).
        axes: slice axes.
        intensity: the round's window (what the masker will see).
        min_pixels: fewer reference pixels = not a structure slice.
        reach: slices past each end of the structure used as empty examples.
        encode: ``NxHxW`` uint8 -> ``NxCxhxw`` embeddings (the masker's frozen encoder).
        variants: transformed copies of the labeled volumes' tracks (not of pseudo-labels'),
            each encoded from its transformed slices.

    Returns:
        ``(tracks, examples, embeddings)`` with ``embeddings[example.row]`` the example's.

    Raises:
        StoreError: a listed volume has no label (or pseudo-label) to read.
    """
    tracks: list[Track] = []
    examples: list[Example] = []
    chunks: list[torch.Tensor] = []
    rows = 0
    for volume_id, source in volumes:
        label = _read_target(root, volume_id, source)
        windowed = window_volume(read_image(root, volume_id), intensity)
        for axis in axes:
            found = [t for t in (_track(volume_id, v, axis, label, min_pixels, reach, source)
                                 for v in values) if t is not None]
            needed = sorted({i for t in found for i in (*t.structure, *t.beyond)})
            if not needed:
                continue
            stacked = stack_slices(windowed, needed, axis)
            origins = list(range(len(tracks), len(tracks) + len(found)))
            copies = [(v, [v.track(t, o) for t, o in zip(found, origins)])
                      for v in (variants if source == "label" else ())]
            for variant, group in [(None, found), *copies]:
                with torch.no_grad():
                    chunks.append(encode(stacked if variant is None
                                         else variant.image(stacked)).clone())
                row_of = {index: rows + k for k, index in enumerate(needed)}
                rows += len(needed)
                for track in group:
                    examples += [Example(len(tracks), i, row_of[i])
                                 for i in (*track.structure, *track.beyond)]
                    tracks.append(track)
        logger.info("adaptation examples of %s (%s): %d so far", volume_id, source, len(examples))
    embeddings = torch.cat(chunks) if chunks else torch.zeros(0)
    return tracks, examples, embeddings


def _read_target(root: zarr.Group, volume_id: str, source: str) -> np.ndarray:
    if source == "label":
        label = read_label(root, volume_id)
        if label is None:
            raise StoreError(f"volume {volume_id!r}: has no label to adapt on")
        return np.asarray(label)
    round_index = int(source.split()[1])
    label = read_output(root, round_index, "pseudo_label", volume_id)
    if label is None:
        raise StoreError(f"volume {volume_id!r}: round {round_index} has no pseudo-label")
    return np.asarray(label)


def hold_out(tracks: Sequence[Track], fraction: float, rng: np.random.Generator) -> None:
    """Mark about ``fraction`` of each labeled track's structure slices as held out, in one
    contiguous block (neighbouring slices look alike: scattered slices would leak). Tracks of
    pseudo-labels are never held out (early stopping measures against labels only); a variant's
    held-out slices are its origin's (never trained on in any form)."""
    for track in tracks:
        n = len(track.structure)
        k = int(round(fraction * n))
        if track.origin is not None or track.source != "label" or k == 0 or n - k < 1:
            continue
        start = int(rng.integers(0, n - k + 1))
        track.held_out = set(track.structure[start:start + k])
    for track in tracks:
        if track.origin is not None:
            track.held_out = set(tracks[track.origin].held_out)
