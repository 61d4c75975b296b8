"""Terminal output of the CLI: rich tables for people, JSON for machines.

When stdout is not a terminal (a log file, ``ray job logs``, CI) a table is printed as a
Markdown table instead, one line per row whatever its width, so that a log keeps one row per
volume (``SEMISAM_TABLES=rich|markdown`` forces either form).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from semisam.schemas.settings import TableStyle, load_settings

_console = Console(stderr=False)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _json(model) -> None:
    typer.echo(json.dumps(model.model_dump(mode="json"), indent=2))


def markdown_tables() -> bool:
    """True when tables go out as Markdown: stdout is not a terminal (or ``SEMISAM_TABLES``)."""
    forced = load_settings().tables
    if forced is not None:
        return forced == TableStyle.markdown
    return not _console.is_terminal


def _cell(value: str) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|") or " "


def markdown_lines(title: str | None, columns: Sequence[str],
                   rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table (with its title as a line above it), one line per row."""
    lines = [title] if title else []
    lines.append("| " + " | ".join(_cell(c) for c in columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]],
                fold: bool = False) -> None:
    """A rich table on a terminal, else a Markdown table (see the module docstring)."""
    if markdown_tables():
        for line in markdown_lines(title, columns, rows):
            typer.echo(line)
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold" if fold else "ellipsis")
    for row in rows:
        table.add_row(*row)
    _console.print(table)


def print_line(text: str) -> None:
    """A plain line (no markup, never wrapped)."""
    _console.print(text, markup=False, highlight=False, soft_wrap=True)


def ingest_report(report, as_json: bool) -> None:
    if as_json:
        _json(report)
        return
    print_table("ingest", ("volume", "status", "labeled", "source", "detail"),
                [(item.volume_id, item.status.value, _fmt(item.labeled), item.source,
                  item.reason or "") for item in report.volumes], fold=True)


def round_summary(summary, as_json: bool) -> None:
    if as_json:
        _json(summary)
        return
    title = (f"round {summary.round}: {summary.done} done, {summary.failed} failed, "
             f"{summary.pending} pending ({summary.status or 'not started'})")
    rows = []
    for v in summary.volumes:
        prompted = f"{v.slices_prompted}/{v.slices_total}" if v.slices_total is not None else "-"
        rows.append((v.volume_id, v.status.value, _fmt(v.node), prompted,
                     _fmt(v.foreground_fraction), _fmt(v.mean_confidence),
                     _fmt(v.student_masker_dice), _fmt(v.seconds, 2), v.error or ""))
    print_table(title, ("volume", "status", "node", "prompted/slices", "fg frac", "mean conf",
                        "student-vs-masker Dice", "s", "error"), rows, fold=True)
    rejected = [v.volume_id for v in summary.volumes if v.masker_rejected]
    if rejected:
        print_line(f"{len(rejected)} volume(s) kept the student's answer, the masker's label having "
                   f"lost the student's structure (fusion.min_student_agreement): "
                   f"{', '.join(rejected)}")
    if summary.per_node:
        print_line("per node: " + ", ".join(f"{n}: {c}" for n, c in sorted(summary.per_node.items())))


def overview(ov, as_json: bool) -> None:
    if as_json:
        _json(ov)
        return
    print_line(f"store {ov.store} (schema {ov.schema_version}): {ov.volumes} volumes, "
               f"{ov.labeled} labeled, {ov.unlabeled} unlabeled")
    print_table("rounds", ("round", "status", "done", "failed", "pending", "fingerprint"),
                [(str(r.round), _fmt(r.status), str(r.done), str(r.failed), str(r.pending),
                  (r.fingerprint or "-")[:12]) for r in ov.rounds])


def _class_voxels(item, names: dict[int, str]) -> str:
    """``left 120, middle 98`` (a multi-class prediction's voxels per class), ``-`` if none."""
    if not item.class_voxels:
        return "-"
    return ", ".join(f"{names.get(v, v)} {n}" for v, n in sorted(item.class_voxels.items()))


def predict_report(report) -> None:
    """`semisam predict`: one row per input scan (a multi-class student: also the voxels of
    each class, by name)."""
    title = f"predict: {len(report.items)} scans -> {report.out_dir}"
    rows = [(it.volume_id or "-", it.status.value, _fmt(it.foreground_voxels),
             _fmt(it.seconds, 2) if it.status.value == "written" else "-",
             it.label or "-", it.reason or "") for it in report.items]
    names = getattr(report, "classes", None)
    if not names:
        print_table(title, ("volume", "status", "fg voxels", "s", "output", "detail"), rows,
                    fold=True)
        return
    classes = ", ".join(f"{v}={n}" for v, n in names.items())
    print_table(f"{title} (classes {classes})",
                ("volume", "status", "fg voxels", "voxels per class", "s", "output", "detail"),
                [(*row[:3], _class_voxels(it, names), *row[3:])
                 for row, it in zip(rows, report.items)], fold=True)


@contextlib.contextmanager
def count_bar(label: str, total: int, enabled: bool = True) -> Iterator:
    """Progress bar over ``total`` items; yields ``callback(item_id, status)``."""
    if not enabled or total == 0:
        yield lambda *_: None
        return
    with Progress(TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[last]}"), TimeElapsedColumn()) as progress:
        task = progress.add_task(label, total=total, last="")

        def callback(item_id: str, status: str) -> None:
            progress.update(task, advance=1, last=f"{item_id}: {status}")

        yield callback


def demo_result(result) -> None:
    round_summary(result.summary, as_json=False)
    _console.print(f"[bold]masker:[/bold] {result.masker_note}")
    if result.pseudo_label_dice is not None:
        _console.print(f"[bold]pseudo-label Dice vs the phantoms' hidden labels:[/bold] "
                       f"{result.pseudo_label_dice:.3f}")
    gain = getattr(result, "masker_gain", None)
    if gain is not None:
        _console.print(f"[bold]did the masker help?[/bold] {gain.sentence()}")
    for name, path in result.paths.items():
        print_line(f"{name:>16}: {path}")
