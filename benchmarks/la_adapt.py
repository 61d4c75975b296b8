"""Left Atrium: frozen vs adapted LiteMedSAM (``semisam adapt``), pseudo-labels and students.

On the split and schedule of ``benchmarks/la.py`` (half-size volumes, CPU schedule), per number
of labels L and seed:

1. b (la.py's Mean Teacher student 0, the prompter) and round 1 with the frozen masker
   (la.py's loop store), then, after the adapted steps, la.py's c+, a and d (``--settings``;
   reused from its work directory when already there);
2. ``adapt``: LiteMedSAM adapted to the L labeled volumes (`adapt_masker`, default config, the
   seed as its seed); its seconds and held-out (labeled-slice) Dice;
3. ``diag``: a diagnostic that READS THE REFERENCES of the unlabeled volumes: LiteMedSAM prompted
   with the reference's box + 5 px on every slice, frozen and adapted (what each masker can do
   with good boxes; never a product path);
4. round 1 with the adapted masker prompted by b (the loop's student 0) in its own copy of the
   training store (``adapted.zarr``); pseudo-label Dice and 95HD per volume against b's own
   prediction and the frozen round's pseudo-labels (the loop's round 1);
5. ``c+ad``: c+'s recipe (warm start from b, CE + Dice SAM term of weight 1) on the adapted
   round.

Every student is evaluated on the 8 held-out volumes of ``volumes.list`` and on the first
``--more`` (24) volumes of ``more.list`` (``more`` rows), Dice with and without the largest
component. Results in ``WORKDIR/adapt-results.json`` (``--results``; reused on rerun).

Variants: ``--adapt-config V.json --tag=-V`` adapts with those `AdaptConfig` fields (checkpoint,
stores and result keys carry the tag); ``--diag-axes 0 1 2`` runs the diagnostic along all three
slice axes, averaging their probabilities (keys ``diag<tag>-mpr/``); ``--mpr`` makes both rounds
multi-planar (la.py's c+mpr round; keys ``round<tag>-mpr/``, ``c+ad<tag>-mpr/``, ``c+mpr/``);
``--select 0.5`` also trains c+ad with its SAM term on the best half of the adapted round's
pseudo-labels (ranked by the records' student-masker agreement, ``--select-by``; keys
``c+ad<tag>-top50/``); ``--extra-unlabeled 24`` also trains c+ad on the adapted round of the
training store plus 24 more unlabeled volumes of ``more.list`` (after the ``--more`` held out;
keys ``c+ad<tag>-x24/``); ``--round2`` runs round 2 with the same adapted masker prompted by that
c+ad student instead of b and trains c+ad on it from b (keys ``round<tag>[-x24]-r2/``,
``c+ad<tag>[-x24]-r2/``); ``--self-train`` runs round 2 on a copy of the adapted store
with the round-1 c+ad student's own masks as pseudo-labels (masker weight 0 in the fusion) and
trains c+ad on it (keys ``round<tag>-self/``, ``c+ad<tag>-self/``; works with ``--cold``);
``--mask-prompt`` passes the student's slice logits to the adapted
masker in its rounds (``prompts.mask_prompt``; for a masker adapted with ``mask_prompt``);
``--prior-box`` lets the adapted round replace a student that disagrees with the masker
prompted by the labeled volumes' box (``prompts.prior_box``; for a masker adapted with
``box.loose_prob``; keys ``round<tag>-pbox/``, ``c+ad<tag>-pbox/``); ``--train-config T.json
--student-tag=-T`` trains the c+ad students with those `TrainConfig` fields set over c+'s (keys
``c+ad...-T/``); ``--cold`` trains every c+ad student from random weights (the loop's
default, ``warm_start`` off) instead of from b (keys ``c+ad...-cold/``; neither option with
``--round2``, whose round would clash with the plain one's).

    .venv/bin/python benchmarks/la_adapt.py --labeled 2 --seeds 0 --workdir bench-out/la-half
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
from hippocampus import SavedResults
from la import DATA, MPR_AXES, args_round_config, configs, downsampled, prepare, split_ids, train

from semisam.pipeline.evaluate import evaluate_round, evaluate_student_both
from semisam.pipeline.ingest import ingest
from semisam.pipeline.loop import Loop
from semisam.pipeline.rounds.driver import run_round
from semisam.schemas import (
    AdaptConfig,
    LiteMedSamConfig,
    LoopConfig,
    PseudoLabelRank,
    RoundConfig,
    RoundVolumeSelection,
    TrainConfig,
)
from semisam.store import list_metas, open_store, read_image, read_reference
from semisam.training.adaptation import adapt_masker
from semisam.training.metrics import dice, hd95
from semisam.training.selection import select_round_volumes
from semisam.workers.intensity import window_volume
from semisam.workers.localization import put_slices, slice_box, stack_slices
from semisam.workers.maskers.base import SlicePrompt
from semisam.workers.maskers.litemedsam import LiteMedSamMasker

log = logging.getLogger("benchmarks.la_adapt")


def more_store(data: Path, work: Path, count: int, scale: float) -> Path:
    """``WORKDIR/heldout-more.zarr``: the first ``count`` volumes of ``more.list``."""
    ids = [x.strip() for x in (data / "more.list").read_text().split() if x.strip()][:count]
    small = downsampled(data, work / f"data-x{scale:g}", ids, scale)
    store = work / f"heldout-more{count}.zarr"
    if not (store / "zarr.json").is_file():
        report = ingest(store, [small / f"{i}.h5" for i in ids], labeled=None)
        if not report.ok:
            raise SystemExit(f"ingest into {store} failed: {report.failed[0].reason}")
    return store


def evaluate_both(student: Path, stores: dict[str, Path], previous: dict | None) -> dict:
    """Dice (plain and largest component) on the 8 held-out volumes and on the ``more`` set."""
    stamp = student.stat().st_mtime_ns
    if previous and previous.get("checkpoint_mtime_ns") == stamp:
        return previous
    out: dict = {"checkpoint_mtime_ns": stamp}
    for name, key in (("heldout", ""), ("more", "more_")):
        plain, lcc = evaluate_student_both(stores[name], student)
        out.update({f"{key}dice": plain.mean("dice"), f"{key}dice_lcc": lcc.mean("dice"),
                    f"{key}hd95_voxels_lcc": lcc.mean("hd95_voxels"), f"{key}n": len(lcc.cases)})
    return out


def axes_suffix(axes: list[int] | tuple[int, ...]) -> str:
    """The result-key suffix of a diagnostic along ``axes``: '' for axis 2 alone (the round's
    slice axis), '-mpr' for all three, '-ax<digits>' otherwise."""
    axes = sorted(axes)
    return "" if axes == [2] else "-mpr" if axes == [0, 1, 2] else "-ax" + "".join(map(str, axes))


def reference_box_prompts(windowed: np.ndarray, ref: np.ndarray, axis: int, margin: int = 5
                          ) -> tuple[list[int], np.ndarray, list[SlicePrompt]]:
    """The slices along ``axis`` with at least 4 reference voxels: their indices, ``NxHxW``
    windowed pixels and the reference's box + ``margin`` px on each (READS THE REFERENCE)."""
    idx = [i for i in range(ref.shape[axis]) if np.take(ref, i, axis=axis).sum() >= 4]
    masks = stack_slices(ref, idx, axis)
    prompts = [SlicePrompt(index=i, box=slice_box(m, margin)) for i, m in zip(idx, masks)]
    return idx, stack_slices(windowed, idx, axis), prompts


def reference_box_probabilities(masker: LiteMedSamMasker, shape: tuple[int, ...], axis: int,
                                prompted: tuple[list[int], np.ndarray, list[SlicePrompt]]
                                ) -> np.ndarray:
    """``shape`` float32: the masker's foreground probability on the ``prompted`` slices along
    ``axis`` (`reference_box_prompts`), 0 on the other slices."""
    idx, slices, prompts = prompted
    probs = np.zeros(shape, np.float32)
    return put_slices(probs, idx, axis, masker.mask_slices(slices, prompts)) if idx else probs


def reference_box_diagnostic(store: Path, maskers: dict[str, LiteMedSamMasker],
                             limit: int | None = None, axes: tuple[int, ...] = (2,),
                             margin: int = 5) -> dict:
    """Per unlabeled volume (the first ``limit``) and masker: Dice and 95HD (voxels) of
    LiteMedSAM prompted with the reference's box + ``margin`` px on every slice along each of
    ``axes`` (reads the references); with several axes the per-voxel mean of their
    probabilities, thresholded at 0.5 (a multi-planar round's average), and each axis's own
    Dice (``axis_dice``)."""
    root = open_store(store, read_only=True)
    cfg = RoundConfig()
    out: dict = {name: {} for name in maskers}
    metas = [m for m in list_metas(root) if not m.labeled][:limit]
    for meta in metas:
        ref = read_reference(root, meta.volume_id)
        if ref is None:
            continue
        ref = np.asarray(ref) > 0
        windowed = window_volume(read_image(root, meta.volume_id), cfg.intensity)
        prompted = {a: reference_box_prompts(windowed, ref, a, margin) for a in axes}
        for name, masker in maskers.items():
            per_axis = {a: reference_box_probabilities(masker, ref.shape, a, p)
                        for a, p in prompted.items()}
            pred = np.mean(list(per_axis.values()), axis=0) > 0.5
            row = {"dice": float(dice(pred, ref)), "hd95": float(hd95(pred, ref))}
            if len(axes) > 1:
                row["axis_dice"] = {str(a): float(dice(p > 0.5, ref)) for a, p in per_axis.items()}
            out[name][meta.volume_id] = row
        log.info("reference-box diagnostic %s: %s", meta.volume_id,
                 {n: round(out[n][meta.volume_id]["dice"], 3) for n in maskers})
    if len(axes) > 1:
        out["axes"] = list(axes)
    return out


def per_volume_round(store: Path, student: Path, round_index: int = 1) -> dict[str, dict]:
    """A round's pseudo-label and its prompting student's Dice / 95HD per volume."""
    ev = evaluate_round(store, round_index, student)
    own = {c.volume_id: c for c in ev.student.cases}
    return {c.volume_id: {"pl_dice": c.dice, "pl_hd95": c.hd95_voxels,
                          "student_dice": own[c.volume_id].dice,
                          "student_hd95": own[c.volume_id].hd95_voxels}
            for c in ev.pseudo_label.cases}


def adapt_and_diagnose(work: Path, key: str, stores: dict[str, Path],
                       args: argparse.Namespace, results: SavedResults) -> Path:
    """Steps 2 and 3: the adapted checkpoint (reused when there) and the reference-box
    diagnostic of the frozen and adapted maskers (on the first ``--diag-volumes`` unlabeled
    volumes); returns the checkpoint."""
    tag, suffix, axes = args.tag, axes_suffix(args.diag_axes), tuple(args.diag_axes)
    adapted = work / f"adapted_litemedsam{tag}.pth"
    cache = args.workdir / "embeddings"
    seed = int(key.split("/")[1])
    if f"adapt{tag}/{key}" not in results or not adapted.is_file():
        overrides = json.loads(args.adapt_config.read_text()) if args.adapt_config else {}
        config = AdaptConfig.model_validate({"seed": seed, "embedding_cache": cache,
                                             "encoder_batch_size": 2, **overrides})
        # round r-1's pseudo-labels live in the loop's store (round 1 of the frozen masker)
        source = work / "loop.zarr" if config.pseudo_labels else stores["train"]
        result = adapt_masker(source, adapted, config, resume=True)
        results[f"adapt{tag}/{key}"] = {
            **result.meta.model_dump(mode="json", exclude={"config"}), "overrides": overrides}
    if tag:  # a variant: its diagnostic only, against the frozen masker's
        if f"diag{tag}{suffix}/{key}" not in results:
            tuned = LiteMedSamMasker(LiteMedSamConfig(batch_size=2, embedding_cache=cache,
                                                      checkpoint=adapted), "cpu")
            results[f"diag{tag}{suffix}/{key}"] = reference_box_diagnostic(
                stores["train"], {"adapted": tuned}, args.diag_volumes, axes)
        return adapted
    if f"diag{suffix}/{key}" not in results:
        frozen = LiteMedSamMasker(LiteMedSamConfig(batch_size=2, embedding_cache=cache), "cpu")
        tuned = LiteMedSamMasker(LiteMedSamConfig(batch_size=2, embedding_cache=cache,
                                                  checkpoint=adapted), "cpu")
        results[f"diag{suffix}/{key}"] = reference_box_diagnostic(
            stores["train"], {"frozen": frozen, "adapted": tuned}, args.diag_volumes, axes)
    return adapted


@dataclass(frozen=True)
class Run:
    """One (L, seed) of the benchmark: its work directory, result key ('L2/0'), the held-out
    stores (`evaluate_both`) and the results file."""

    work: Path
    key: str
    stores: dict[str, Path]
    results: SavedResults
    cold: bool = False  # c+ad students start from random weights instead of b (``--cold``)
    student_tag: str = ""  # ``--student-tag``: c+ad students trained with ``--train-config``


def with_fields(cfg: TrainConfig, path: Path | None) -> TrainConfig:
    """``cfg`` with the `TrainConfig` fields of the JSON file ``path`` (``--train-config``)
    set over it, section by section; ``cfg`` itself when ``path`` is None."""
    if path is None:
        return cfg
    data = cfg.model_dump(mode="json")
    for section, value in json.loads(path.read_text()).items():
        data[section] = {**data[section], **value} if isinstance(value, dict) else value
    return TrainConfig.model_validate(data)


def round_and_student(run: Run, name: str, store: Path, round_index: int, prompter: Path,
                      init: Path, cfg: RoundConfig, train_cfg: TrainConfig,
                      extra: Callable[[], dict] = dict) -> Path:
    """Round ``round_index`` on ``store`` prompted by ``prompter`` (reused when done), its
    per-volume pseudo-labels (key ``round<name>/``, with ``extra()`` beside them), then c+'s
    recipe on it warm-started from ``init`` (from random weights with ``run.cold``) and
    evaluated on both held-out sets (key ``c+ad<name><student tag>/``, ``-cold`` added when
    cold; its row names the round, ``round<name>``); returns that student's checkpoint."""
    t0 = time.perf_counter()
    run_round(store, round_index, prompter, cfg, show_progress=False)
    if f"round{name}/{run.key}" not in run.results:
        run.results[f"round{name}/{run.key}"] = {
            "seconds": round(time.perf_counter() - t0, 1), **extra(),
            "adapted": per_volume_round(store, prompter, round_index)}
    student = f"c+ad{name}{run.student_tag}{'-cold' if run.cold else ''}"
    ckpt = run.work / f"{student}.pt"
    seconds = train(store, ckpt, train_cfg, round_index, init=None if run.cold else init)
    run.results[f"{student}/{run.key}"] = {
        **evaluate_both(ckpt, run.stores, run.results.get(f"{student}/{run.key}")),
        "seconds": round(seconds, 1), "round": f"round{name}"}
    return ckpt


def run_adapted(labeled: int, seed: int, args: argparse.Namespace, stores: dict[str, Path],
                results: SavedResults) -> None:
    """Steps 2-5 for one (L, seed) after la.py's settings."""
    work = args.workdir / f"L{labeled}" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    key = f"L{labeled}/{seed}"
    cfgs = configs(args.schedule, seed, False)
    if args.diagnostic_only:
        adapt_and_diagnose(work, key, stores, args, results)
        return
    loop_store = work / "loop.zarr"
    if not loop_store.exists():
        shutil.copytree(stores["train"], loop_store)
    Loop(loop_store, LoopConfig(train=cfgs["c"], round=args_round_config(args)),
         work / "loop").run(0)
    student0 = work / "loop" / "student_0.pt"
    # the frozen round: the loop's round 1, or la.py's c+mpr round (its own store) with --mpr
    variant, plus = ("-mpr", "c+mpr") if args.mpr else ("", "c+")
    frozen_store = work / ("mpr.zarr" if args.mpr else "loop.zarr")
    if not frozen_store.exists():
        shutil.copytree(stores["train"], frozen_store)
    cfg = round_config(args)
    run_round(frozen_store, 1, student0, cfg, show_progress=False)
    adapted = adapt_and_diagnose(work, key, stores, args, results)
    name = f"{args.tag}{variant}{'-pbox' if args.prior_box else ''}"
    store = work / f"adapted{name}.zarr"
    if not store.exists():
        shutil.copytree(stores["train"], store)
    cfg.masker.litemedsam.checkpoint = adapted
    cfg.prompts.mask_prompt = args.mask_prompt
    cfg.prompts.prior_box = True if args.prior_box else None  # unset: the product default
    run = Run(work, key, stores, results, cold=args.cold, student_tag=args.student_tag)
    plus_ad = with_fields(cfgs["c+"], args.train_config)
    ckpt = round_and_student(run, name, store, 1, student0, student0, cfg, plus_ad,
                             lambda: {"frozen": per_volume_round(frozen_store, student0)})
    if args.extra_unlabeled:
        more_unlabeled(run, name, cfg, student0, plus_ad, args)
    if args.round2 and not args.extra_unlabeled:
        second_round(run, name, store, ckpt, student0, cfg, plus_ad)
    if args.self_train:
        self_training_round(run, name, store, ckpt, student0, cfg, plus_ad)
    for fraction in args.select:
        selected(run, f"c+ad{name}", store, student0, cfgs["c+"], fraction, args)
    results[f"b/{key}"] = evaluate_both(student0, stores, results.get(f"b/{key}"))
    if "c+" in args.settings:
        train(frozen_store, work / f"{plus}.pt", cfgs["c+"], 1, init=student0)
    for setting in ("a", "d"):
        if setting in args.settings:
            path = work / "a.pt" if setting == "a" else args.workdir / "d" / f"seed{seed}.pt"
            train(stores["train" if setting == "a" else "full"], path, cfgs[setting])
    for setting in ("a", "c", "c+", "c+mpr"):
        path = work / f"{setting}.pt"
        if path.is_file():
            results[f"{setting}/{key}"] = evaluate_both(path, stores, results.get(f"{setting}/{key}"))
    d = args.workdir / "d" / f"seed{seed}.pt"
    if d.is_file():
        results[f"d/all/{seed}"] = evaluate_both(d, stores, results.get(f"d/all/{seed}"))


def selected(run: Run, setting: str, store: Path, student0: Path, cfg: TrainConfig,
             fraction: float, args: argparse.Namespace) -> None:
    """``setting`` (c+'s recipe on ``store``'s round 1) with its SAM term on the best
    ``fraction`` of the pseudo-labeled volumes only (`SamConsistencyConfig.volumes`, ranked by
    ``--select-by``); key ``<setting>-top<percent><by>/``."""
    by = PseudoLabelRank(args.select_by)
    name = f"{setting}-top{round(100 * fraction)}{'' if by == PseudoLabelRank.agreement else '-conf'}"
    variant = cfg.model_copy(deep=True)
    variant.sam.volumes = RoundVolumeSelection(top_fraction=fraction, rank_by=by)
    root = open_store(store, read_only=True)
    kept, left = select_round_volumes(root, 1, [m.volume_id for m in list_metas(root)
                                                if not m.labeled], variant.sam.volumes)
    ckpt = run.work / f"{name}.pt"
    seconds = train(store, ckpt, variant, 1, init=student0)
    run.results[f"{name}/{run.key}"] = {
        **evaluate_both(ckpt, run.stores, run.results.get(f"{name}/{run.key}")),
        "seconds": round(seconds, 1), "kept": kept, "left_out": left}


def more_unlabeled(run: Run, name: str, cfg: RoundConfig, student0: Path,
                   train_cfg: TrainConfig, args: argparse.Namespace) -> None:
    """c+ad with ``--extra-unlabeled N`` more unlabeled volumes: the training store plus
    ``more.list`` volumes ``--more .. --more + N`` (never the held-out ``more`` set), the adapted
    round on all of them (``adapted<name>-x<N>.zarr``, prompted by b), c+'s recipe on it; keys
    ``round<name>-x<N>/``, ``c+ad<name>-x<N>/``."""
    count = args.extra_unlabeled
    every = [x.strip() for x in (args.data / "more.list").read_text().split() if x.strip()]
    ids = every[args.more:args.more + count]
    if len(ids) < count:
        raise SystemExit(f"--extra-unlabeled {count}: more.list has only {len(ids)} volumes "
                         f"after the {args.more} held out")
    small = downsampled(args.data, args.workdir / "data-x0.5", ids, 0.5)
    store = run.work / f"adapted{name}-x{count}.zarr"
    if not (store / "zarr.json").is_file():
        partial = store.with_name(store.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(run.stores["train"], partial)
        report = ingest(partial, [small / f"{i}.h5" for i in ids], labeled=set())
        if not report.ok:
            raise SystemExit(f"ingest into {partial} failed: {report.failed[0].reason}")
        partial.rename(store)
    ckpt = round_and_student(run, f"{name}-x{count}", store, 1, student0, student0, cfg,
                             train_cfg, lambda: {"extra": ids})
    if args.round2:
        second_round(run, f"{name}-x{count}", store, ckpt, student0, cfg, train_cfg)


def second_round(run: Run, name: str, store: Path, prompter: Path, student0: Path,
                 cfg: RoundConfig, train_cfg: TrainConfig) -> None:
    """Round 2 on ``store`` with the same adapted masker, prompted by ``prompter`` (the c+ad
    student of round 1) instead of b, and c+'s recipe on it, warm-started from b like round 1's
    c+ad so that only the pseudo-labels differ; keys ``round<name>-r2/``, ``c+ad<name>-r2/``."""
    round_and_student(run, f"{name}-r2", store, 2, prompter, student0, cfg, train_cfg,
                      lambda: {"prompter": prompter.name})


def self_training_round(run: Run, name: str, store: Path, prompter: Path, student0: Path,
                        cfg: RoundConfig, train_cfg: TrainConfig) -> None:
    """Round 2 whose pseudo-labels are ``prompter``'s own masks (the c+ad student of round 1;
    fusion weight 0 for the masker, so the masker only runs, and the prior's box check still
    guards the structure), in a copy of ``store`` (``adapted<name>-self.zarr``, so that it
    never clashes with ``--round2``), and c+'s recipe on it (from random weights with
    ``--cold``, else from b); keys ``round<name>-self/``, ``c+ad<name>-self.../``."""
    copy = run.work / f"adapted{name}-self.zarr"
    if not copy.exists():
        partial = copy.with_name(copy.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(store, partial)
        partial.rename(copy)
    own = cfg.model_copy(deep=True)
    own.fusion.masker_weight = 0.0
    round_and_student(run, f"{name}-self", copy, 2, prompter, student0, own, train_cfg,
                      lambda: {"prompter": prompter.name, "masker_weight": 0.0})


def round_config(args: argparse.Namespace) -> RoundConfig:
    """The round of ``--mpr`` (la.py's c+mpr: masks along slice axes 2, 0 and 1, averaged
    where they overlap; the prompter's probability averaged over flips of axes 0 and 1) or the
    default one-axis round."""
    cfg = args_round_config(args)
    if args.mpr:
        cfg.prompts.extra_axes = MPR_AXES
        cfg.student.flip_axes = MPR_AXES
    return cfg


def summary_lines(results: dict) -> list[str]:
    """Per (L, seed): pseudo-label and diagnostic means, students on both held-out sets."""
    lines = []
    for name in sorted(k for k in results if k.startswith("diag")):
        head, key = name.split("/", 1)
        axes = results[name].get("axes", [2])
        suffix = axes_suffix(axes)
        tag = head.removeprefix("diag").removesuffix(suffix)
        tuned, adapt = results[name]["adapted"], results.get(f"adapt{tag}/{key}", {})
        frozen = results.get(f"diag{suffix}/{key}", {}).get("frozen", {})
        better = sum(tuned[v]["dice"] > frozen[v]["dice"] for v in tuned if v in frozen)
        lines.append(f"## {key} adaptation '{tag or 'default'}' ({adapt.get('overrides')}): "
                     f"{adapt.get('seconds')} s, held-out labeled-slice Dice "
                     f"{adapt.get('held_out_dice_base')} -> {adapt.get('held_out_dice')} (step "
                     f"{adapt.get('best_iteration')}); reference-box diagnostic along axes "
                     f"{axes} on {len(tuned)} unlabeled volumes: adapted "
                     f"{np.mean([x['dice'] for x in tuned.values()]):.3f}, "
                     + (f"frozen {np.mean([x['dice'] for x in frozen.values()]):.3f} (adapted "
                        f"better on {better}/{len(tuned)})" if frozen else
                        "no frozen diagnostic in this results file"))
    for head, key in sorted(k.split("/", 1) for k in results if k.startswith("round")):
        name = head.removeprefix("round")
        rnd, diag = results[f"{head}/{key}"], results.get(f"diag{name}/{key}", {})
        lines.append(f"## {key} round 1{name}")
        for masker in ("frozen", "adapted"):
            vols = rnd.get(masker)
            if not vols:
                continue
            pl = [v["pl_dice"] for v in vols.values()]
            better = sum(v["pl_dice"] > v["student_dice"] for v in vols.values())
            hd = [v["pl_hd95"] for v in vols.values() if v["pl_hd95"] is not None]
            ref = [v["dice"] for v in diag.get(masker, {}).values()]
            lines.append(f"- {masker}: pseudo-label Dice {np.mean(pl):.3f}, 95HD {np.mean(hd):.2f}, "
                         f"better than student b on {better}/{len(vols)}; reference-box "
                         f"diagnostic {np.mean(ref) if ref else float('nan'):.3f}")
        seed = key.split("/")[1]
        chosen = sorted(k.split("/", 1)[0] for k in results if k.endswith(f"/{key}") and (
            k.startswith(f"c+ad{name}-top") or k.startswith(f"c+ad{name}-x")))
        # students trained on this very round with another recipe (--cold, --train-config)
        variants = sorted(k.split("/", 1)[0] for k, row in results.items()
                          if k.endswith(f"/{key}") and row.get("round") == head
                          and k.split("/", 1)[0] != f"c+ad{name}")
        for setting in ("a", "b", "c", "c+", "c+mpr", f"c+ad{name}", *variants, *chosen, "d"):
            row = results.get(f"{setting}/{key}") or (results.get(f"d/all/{seed}")
                                                      if setting == "d" else None)
            if row:
                lines.append(f"  - {setting}: held-out 8 Dice {row.get('dice', float('nan')):.3f} / "
                             f"LCC {row.get('dice_lcc', float('nan')):.3f}; more "
                             f"{row.get('more_dice', float('nan')):.3f} / "
                             f"{row.get('more_dice_lcc', float('nan')):.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/la"))
    parser.add_argument("--labeled", type=int, nargs="+", default=[2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--settings", nargs="+", default=["c+", "a", "d"],
                        help="la.py settings trained after the adapted ones (b always is)")
    parser.add_argument("--more", type=int, default=24, help="volumes of more.list held out")
    parser.add_argument("--holdout", type=int, default=8)
    parser.add_argument("--diagnostic-only", action="store_true",
                        help="only adapt and run the reference-box diagnostic (no students)")
    parser.add_argument("--diag-volumes", type=int, default=None,
                        help="the diagnostic on the first N unlabeled volumes (default all)")
    parser.add_argument("--diag-axes", type=int, nargs="+", choices=(0, 1, 2), default=[2],
                        help="slice axes of the diagnostic; several = the mean of their "
                        "probabilities (result keys diag-mpr/ for 0 1 2)")
    parser.add_argument("--results", default="adapt-results.json",
                        help="results file in WORKDIR (one per concurrent run)")
    parser.add_argument("--adapt-config", type=Path, default=None,
                        help="JSON of AdaptConfig fields over the default (a variant)")
    parser.add_argument("--tag", default="",
                        help="a variant's name (with --adapt-config): its checkpoint, stores and "
                        "result keys carry it (adapt<tag>/, diag<tag>/, round<tag>/, c+ad<tag>/)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (1 when two runs share 2 cores: oversubscribed "
                        "threads slow both by up to 10x)")
    parser.add_argument("--mpr", action="store_true",
                        help="rounds along slice axes 2, 0 and 1 (la.py's c+mpr round; frozen "
                        "in mpr.zarr, adapted in adapted<tag>-mpr.zarr; keys round<tag>-mpr/, "
                        "c+ad<tag>-mpr/, c+mpr/)")
    parser.add_argument("--select", type=float, nargs="*", default=[],
                        help="also train c+ad with its SAM term on the best FRACTION of the "
                        "adapted round's pseudo-labels (one student per fraction; keys "
                        "c+ad<tag>-top<percent>/)")
    parser.add_argument("--select-by", choices=[r.value for r in PseudoLabelRank],
                        default="agreement", help="what ranks the pseudo-labels for --select")
    parser.add_argument("--extra-unlabeled", type=int, default=0, metavar="N",
                        help="also train c+ad on the adapted round of N more unlabeled volumes "
                        "(more.list after the --more held out; keys c+ad<tag>-x<N>/)")
    parser.add_argument("--train-config", type=Path, default=None,
                        help="JSON of TrainConfig fields set over c+'s for the c+ad students "
                        "(with --student-tag)")
    parser.add_argument("--student-tag", default="",
                        help="key suffix of c+ad students trained with --train-config")
    parser.add_argument("--cold", action="store_true",
                        help="c+ad students from random weights instead of from b (the loop's "
                        "default); keys c+ad...-cold/; not with --round2")
    parser.add_argument("--round2", action="store_true",
                        help="round 2 with the same adapted masker prompted by the round-1 c+ad "
                        "student (of --extra-unlabeled when given), then c+ad on it from b "
                        "(keys round<tag>[-x<N>]-r2/, c+ad<tag>[-x<N>]-r2/)")
    parser.add_argument("--self-train", action="store_true",
                        help="round 2 of the round-1 c+ad student's own masks (masker weight 0 "
                        "in the fusion; a copy of the store) and c+ad on it; keys "
                        "round<tag>-self/, c+ad<tag>-self/")
    parser.add_argument("--mask-prompt", action="store_true",
                        help="the adapted round passes the student's slice logits as SAM's mask "
                        "prompt (prompts.mask_prompt; for maskers adapted with mask_prompt)")
    parser.add_argument("--prior-box", action="store_true",
                        help="the adapted round checks the student against the masker prompted "
                        "by the labeled volumes' box (prompts.prior_box; for maskers adapted "
                        "with box.loose_prob; keys round<tag>-pbox/, c+ad<tag>-pbox/)")
    args = parser.parse_args(argv)
    if (args.cold or args.train_config) and args.round2:
        parser.error("--cold/--train-config with --round2: round 2 would clash with the plain one's")
    if bool(args.train_config) != bool(args.student_tag):
        parser.error("--train-config and --student-tag go together")
    args.schedule, args.scale, args.smoke, args.rounds = "cpu", 0.5, False, 1
    args.unlabeled, args.masker, args.sam_checkpoint, args.no_embedding_cache = None, None, None, False
    from semisam.schemas import MaskerKind

    args.masker = MaskerKind.litemedsam
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    ids = [x.strip() for x in (args.data / "volumes.list").read_text().split() if x.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = downsampled(args.data, args.workdir / "data-x0.5", ids, 0.5)
    header = {"date": date.today().isoformat(), "command": " ".join(sys.argv), "device":
              "CPU", "more": args.more}
    results = SavedResults(args.workdir / args.results, header)
    for labeled in args.labeled:
        split = split_ids(ids, labeled, args.holdout)
        stores = prepare(data, args.workdir, split)
        stores["more"] = more_store(args.data, args.workdir, args.more, 0.5)
        for seed in args.seeds:
            run_adapted(labeled, seed, args, stores, results)
            print("\n".join(summary_lines(results)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
