"""Terminal output of the CLI: rich tables for people, JSON for machines."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

_console = Console(stderr=False)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _json(model) -> None:
    typer.echo(json.dumps(model.model_dump(mode="json"), indent=2))


def ingest_report(report, as_json: bool) -> None:
    if as_json:
        _json(report)
        return
    table = Table(title="ingest")
    for col in ("volume", "status", "labeled", "source", "detail"):
        table.add_column(col)
    for item in report.volumes:
        table.add_row(item.volume_id, item.status.value, _fmt(item.labeled), item.source, item.reason or "")
    _console.print(table)


def round_summary(summary, as_json: bool) -> None:
    if as_json:
        _json(summary)
        return
    table = Table(title=f"round {summary.round}: {summary.done} done, {summary.failed} failed, "
                        f"{summary.pending} pending ({summary.status or 'not started'})")
    for col in ("volume", "status", "node", "prompted/slices", "fg frac", "mean conf",
                "student-vs-masker Dice", "s", "error"):
        table.add_column(col, overflow="fold")
    for v in summary.volumes:
        prompted = f"{v.slices_prompted}/{v.slices_total}" if v.slices_total is not None else "-"
        table.add_row(v.volume_id, v.status.value, _fmt(v.node), prompted, _fmt(v.foreground_fraction),
                      _fmt(v.mean_confidence), _fmt(v.student_sam_dice), _fmt(v.seconds, 2), v.error or "")
    _console.print(table)
    if summary.per_node:
        _console.print("per node: " + ", ".join(f"{n}: {c}" for n, c in sorted(summary.per_node.items())))


def overview(ov, as_json: bool) -> None:
    if as_json:
        _json(ov)
        return
    _console.print(f"store {ov.store} (schema {ov.schema_version}): {ov.volumes} volumes, "
                   f"{ov.labeled} labeled, {ov.unlabeled} unlabeled")
    table = Table(title="rounds")
    for col in ("round", "status", "done", "failed", "pending", "fingerprint"):
        table.add_column(col)
    for r in ov.rounds:
        table.add_row(str(r.round), _fmt(r.status), str(r.done), str(r.failed), str(r.pending),
                      (r.fingerprint or "-")[:12])
    _console.print(table)


@contextlib.contextmanager
def step_bar(label: str, total: int) -> Iterator:
    """Progress bar for an iterative step; yields ``callback(step, loss)``."""
    with Progress(TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn()) as progress:
        task = progress.add_task(label, total=total, loss="-")

        def callback(step: int, loss: float) -> None:
            progress.update(task, completed=step + 1, loss=f"{loss:.4f}")

        yield callback


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
    for name, path in result.paths.items():
        _console.print(f"{name:>16}: {path}")
