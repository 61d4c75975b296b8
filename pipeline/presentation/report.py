"""``semisam report``: one self-contained HTML page about a round, for the browser.

The page needs no network: CSS and the table-sorting script are inline, the plots are inline SVG
and the montages base64 PNG. It holds:

* the round summary: store, status, fingerprint, masker / fusion / slice axis, student
  checkpoint, counts, per-node counts, wall time of the volumes, and "did the masker help?" (mean
  student and pseudo-label Dice vs reference, the gain, on how many volumes it was better);
* a per-volume table, sortable by any column (click a header): status, attempt, reason,
  node, slices prompted, foreground fraction, mean confidence, student-vs-masker Dice, the
  pseudo-label's Dice against the ground truth where the store has it (``reference``) beside
  the student's own Dice there and the gain (pseudo-label - student: did the masker help?, `gain`;
  the student is re-run from the round's checkpoint unless ``student_panels`` is off), the
  timing of each stage, peak memory; the table scrolls sideways inside its box, the volume
  column staying in view;
* the distributions over finished volumes of the mean confidence and of the student-vs-masker
  Dice (histograms);
* which unlabeled volumes to label next (`suggest`: the top 5 and their score's terms);
* the K volumes most in need of review (`review.rank_round`) as captioned montages
  (image | student | pseudo-label | confidence, with the confidence colour scale);
* Dice per round: each round's mean pseudo-label Dice against the ground truth where the store
  has it, and the held-out Dice of each student from a ``semisam loop`` table
  (``STORE.loop/loop.json``, or ``loop_state``) where there is one.

Multi-class stores (`semisam.store.read_class_map`): a pseudo-label's Dice against the ground
truth is the mean over the store's classes of each class's Dice (``label == v`` against
``reference == v``, as `semisam evaluate` and `semisam loop` score them), so a structure drawn
as another counts as wrong; the summary names the classes, and the montages and their legend
colour each structure by its class.
"""

from __future__ import annotations

import time
from pathlib import Path

from semisam.schemas import ConfigError
from semisam.store import list_rounds, read_round_meta

from .report_data import (  # noqa: F401  (re-exported: the report's data as before the split)
    ReportData,
    gather,
    loop_rows,
    reference_dice,
    round_reference_dice,
    volume_rows,
)
from .report_html import (  # noqa: F401  (re-exported: the page's colours and plots)
    CONFIDENCE_COLOUR,
    DICE_COLOUR,
    ROUND_COLOURS,
    histogram_svg,
    render_page,
    rounds_svg,
)


def build_report(store: str | Path, round_index: int | None = None, *, worst: int = 6,
                 loop_state: Path | None = None, student_panels: bool = True) -> str:
    """The HTML page (a string) of round ``round_index`` (default: the store's last round):
    `report_data.gather` reads what it shows, `report_html.render_page` writes it.

    Raises:
        ConfigError: the store has no such round (or no round at all), ``worst`` < 0.
    """
    from semisam.store import open_store

    if worst < 0:
        raise ConfigError(f"--worst must be >= 0, got {worst}")
    store = str(store)
    root = open_store(store, read_only=True)
    rounds = list_rounds(root)
    if round_index is None:
        if not rounds:
            raise ConfigError(f"{store}: has no rounds yet (run-round first)")
        round_index = rounds[-1]
    meta = read_round_meta(root, round_index)
    if meta is None:
        raise ConfigError(f"round {round_index}: not in {store} (rounds: {rounds or 'none'})")
    started = time.perf_counter()
    data = gather(root, store, meta, worst=worst, loop_state=loop_state,
                  student_panels=student_panels)
    return render_page(data, started)


def write_report(store: str | Path, out: Path, round_index: int | None = None, *,
                 worst: int = 6, loop_state: Path | None = None,
                 student_panels: bool = True) -> Path:
    """`build_report` written to ``out`` (parents created); returns the path."""
    page = build_report(store, round_index, worst=worst, loop_state=loop_state,
                        student_panels=student_panels)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
