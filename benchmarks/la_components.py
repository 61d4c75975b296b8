"""Which component of a student's foreground is the atrium: the largest, or the one the labeled
volumes' location and size prior picks (`PromptConfig.component`), on Left Atrium volumes.

For every volume of the given stores, the student's foreground (probability > 0.5) is scored
against the reference (Dice): whole, its largest 26-connected component, and the component chosen
by the prior fitted on the labeled volumes of ``--prior-store`` (`workers/components.py`). The
round prompts the masker on exactly that component, so a wrong choice there is a wrong
pseudo-label whatever the masker does. Prints a table (means, and every volume where the two
choices differ) and writes JSON.

    .venv/bin/python benchmarks/la_components.py --prior-store WORK/train-L2.zarr \\
        --student b=WORK/L2/seed0/b.pt --stores WORK/train-L2.zarr WORK/heldout.zarr \\
        WORK/heldout-more24.zarr --out docs/bench/la-components.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from semisam.schemas import StudentInferenceConfig
from semisam.store import list_metas, open_store, read_image, read_label, read_reference
from semisam.workers.components import choose_component, store_priors
from semisam.workers.student import load_student, predict_probability

log = logging.getLogger("benchmarks.la_components")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks (1.0 when both are empty)."""
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


def truths(store: Path, skip_labeled: bool):
    """``(volume id, spacing, image, reference)`` of every volume with a reference: the stored
    reference of unlabeled volumes, else the label (held-out stores); ``skip_labeled`` leaves
    out the labeled volumes (those the prior was fitted on)."""
    root = open_store(store, read_only=True)
    for meta in list_metas(root):
        if meta.labeled and skip_labeled:
            continue
        ref = read_reference(root, meta.volume_id)
        if ref is None:
            ref = read_label(root, meta.volume_id)
        if ref is not None:
            yield meta.volume_id, meta.spacing, read_image(root, meta.volume_id), ref > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prior-store", type=Path, required=True)
    parser.add_argument("--student", action="append", required=True, help="name=checkpoint")
    parser.add_argument("--stores", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=Path("la-components.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    prior_store = args.prior_store.resolve()
    prior = store_priors(open_store(prior_store, read_only=True))[1]
    log.info("prior: %s", prior)
    rows: dict[str, dict] = {}
    for item in args.student:
        name, path = item.split("=", 1)
        model, spec, _ = load_student(Path(path), "cpu")
        for store in args.stores:
            for vid, spacing, image, ref in truths(store, store.resolve() == prior_store):
                t = time.perf_counter()
                fg = predict_probability(model, image, spec, StudentInferenceConfig()) > 0.5
                largest = choose_component(fg, spacing, None)
                chosen = choose_component(fg, spacing, prior)
                rows[f"{name}/{store.stem}/{vid}"] = {
                    "whole": dice(fg, ref), "largest": dice(largest, ref),
                    "prior": dice(chosen, ref), "differ": bool(np.any(largest != chosen)),
                    "seconds": time.perf_counter() - t}
                log.info("%s %s %s: %s", name, store.stem, vid, rows[f"{name}/{store.stem}/{vid}"])
    print(table(rows))
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "command": argv,
                                    "prior": prior.model_dump(), "rows": rows}, indent=2))
    return 0


def table(rows: dict[str, dict]) -> str:
    """Means per student and store, then every volume where the choices differ."""
    groups: dict[str, list[dict]] = {}
    for key, row in rows.items():
        groups.setdefault(key.rsplit("/", 1)[0], []).append(row)
    lines = ["| student/store | volumes | whole | largest | prior | differ |", "|---|---|---|---|---|---|"]
    for group, rs in groups.items():
        mean = {k: np.mean([r[k] for r in rs]) for k in ("whole", "largest", "prior")}
        lines.append(f"| {group} | {len(rs)} | {mean['whole']:.3f} | {mean['largest']:.3f} | "
                     f"{mean['prior']:.3f} | {sum(r['differ'] for r in rs)} |")
    lines += ["", "| volume | whole | largest | prior |", "|---|---|---|---|"]
    lines += [f"| {k} | {r['whole']:.3f} | {r['largest']:.3f} | {r['prior']:.3f} |"
              for k, r in rows.items() if r["differ"]]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
