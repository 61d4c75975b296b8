"""`semisam evaluate`: Dice, Jaccard, 95HD, ASD of a student, or of a round's pseudo-labels.

A multi-class store's table has a ``class`` column: per volume one row per structure and one
with their mean, then ``mean +- std`` over the volumes per structure and of the means; a
one-structure store's table is unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from semisam.schemas import ConfigError

from ..cli_app import app, guard

_console = Console()
_COLUMNS = (("dice", "Dice", 3), ("jaccard", "Jaccard", 3), ("hd95_voxels", "95HD vox", 2),
            ("asd_voxels", "ASD vox", 2), ("hd95_mm", "95HD mm", 2), ("asd_mm", "ASD mm", 2))


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cells(metrics) -> list[str]:
    """The `_COLUMNS` of a `CaseMetrics` or `ClassMetrics`."""
    return [_fmt(getattr(metrics, m), d) for m, _, d in _COLUMNS]


def _summary_cells(summary: dict) -> list[str]:
    """``mean +- std`` of every `_COLUMNS` metric in a ``metric -> MetricSummary`` dict."""
    cells = []
    for metric, _, digits in _COLUMNS:
        s = summary[metric]
        cells.append("-" if s.mean is None else f"{s.mean:.{digits}f} +- {s.std:.{digits}f}")
    return cells


def _class_label(report, value: int) -> str:
    return f"{report.classes[value]} ({value})"


def class_table(report, title: str) -> Table:
    """`report_table` of a multi-class `EvaluationReport`: a ``class`` column, per volume a row
    per class and one of their mean, then the per-class and mean ``mean +- std`` rows."""
    table = Table(title=f"{title} ({len(report.cases)} volumes, {len(report.classes)} classes"
                        f"{', largest component' if report.largest_component else ''})")
    table.add_column("volume")
    table.add_column("class")
    for _, header, _ in _COLUMNS:
        table.add_column(header, justify="right")
    for case in report.cases:
        for value in report.classes:
            table.add_row(case.volume_id, _class_label(report, value), *_cells(case.classes[value]))
        table.add_row(case.volume_id, "mean", *_cells(case), end_section=True)
    for value in report.classes:
        table.add_row("mean +- std", _class_label(report, value),
                      *_summary_cells(report.class_summary[value]))
    table.add_row("[bold]mean +- std[/bold]", "[bold]mean[/bold]", *_summary_cells(report.summary),
                  end_section=True)
    return table


def report_table(report, title: str) -> Table:
    """Per-volume rows and a ``mean +- std`` row of an `EvaluationReport` (multi-class:
    `class_table`)."""
    if report.classes is not None:
        return class_table(report, title)
    table = Table(title=f"{title} ({len(report.cases)} volumes"
                        f"{', largest component' if report.largest_component else ''})")
    table.add_column("volume")
    for _, header, _ in _COLUMNS:
        table.add_column(header, justify="right")
    for case in report.cases:
        table.add_row(case.volume_id, *_cells(case))
    table.add_row("[bold]mean +- std[/bold]", *_summary_cells(report.summary), end_section=True)
    return table


def summary_line(report) -> str:
    """``Dice 0.812 +- 0.050, ...`` on one line (tables wrap on narrow terminals)."""
    parts = []
    for metric, header, digits in _COLUMNS:
        s = report.summary[metric]
        if s.mean is not None:
            parts.append(f"{header} {s.mean:.{digits}f} +- {s.std:.{digits}f}")
    line = f"mean +- std over {len(report.cases)} volumes: " + ", ".join(parts)
    if report.classes is None:
        return line
    per_class = []
    for value in report.classes:
        s = report.class_summary[value]["dice"]
        per_class.append(f"{_class_label(report, value)} "
                         + ("-" if s.mean is None else f"{s.mean:.3f} +- {s.std:.3f}"))
    return f"{line} (mean of {len(report.classes)} classes); Dice per class: " + ", ".join(per_class)


def _volumes(value: Optional[str]) -> Optional[list[str]]:
    from ..evaluate import read_volume_list

    return None if value is None else read_volume_list(value)


@app.command()
@guard
def evaluate(
    store: Annotated[str, typer.Argument(help="store directory or URL")],
    student: Annotated[Optional[Path], typer.Option(
        help="student checkpoint to evaluate (with --round: the round's student if it moved)")] = None,
    round_index: Annotated[Optional[int], typer.Option(
        "--round", help="evaluate this round's pseudo-labels and its student's own predictions")] = None,
    volumes: Annotated[Optional[str], typer.Option(
        help="file with one volume id per line, or comma-separated ids (default: all with ground truth)")] = None,
    largest_component: Annotated[bool, typer.Option(help="keep the largest connected component")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Sliding-window inference and metrics (voxels and mm) against labels or references."""
    from ..evaluate import evaluate_round, evaluate_student

    if student is None and round_index is None:
        raise ConfigError("give --student CKPT or --round R")
    ids = _volumes(volumes)
    if round_index is None:
        report = evaluate_student(store, student, ids, largest_component, device=device)
    else:
        report = evaluate_round(store, round_index, student, ids, largest_component, device)
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    if round_index is None:
        _console.print(report_table(report, f"student {student}"))
        _console.print(summary_line(report), markup=False)
        return
    for part, title in ((report.pseudo_label, f"round {round_index} pseudo-labels"),
                        (report.student, f"round {round_index} student {report.student.source}")):
        _console.print(report_table(part, title))
        _console.print(f"{title}: {summary_line(part)}", markup=False, soft_wrap=True)
    gains = ", ".join(f"{m} {report.gain[m]:+.3f}" for m, _, _ in _COLUMNS if report.gain.get(m) is not None)
    _console.print(f"pseudo-label - student (means): {gains}", markup=False, soft_wrap=True)
