"""`semisam predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from pydantic import ValidationError

from semisam.schemas import ConfigError, StudentInferenceConfig, first_validation_error

from ..cli_app import app, guard
from ..presentation import render

if TYPE_CHECKING:
    from ..predict import PredictReport


def _axes(text: Optional[str]) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(a) for a in text.split(","))
    except ValueError:
        raise ConfigError(f"--flip: expected axes like 0,1,2, got {text!r}") from None


@app.command()
@guard
def predict(
    inputs: Annotated[list[Path], typer.Argument(
        help="scans: files ingest reads (NIfTI, NRRD, h5, npy), folders of them, DICOM folders")],
    student: Annotated[Path, typer.Option(help="student checkpoint (.pt)")],
    out: Annotated[Path, typer.Option("--out", help="output directory")],
    flip: Annotated[Optional[str], typer.Option(
        help="test-time augmentation: mean over flips along these axes, e.g. 0,1,2")] = None,
    largest_component: Annotated[bool, typer.Option(
        "--largest-component", help="keep only the largest 3D component")] = False,
    prior_component: Annotated[bool, typer.Option(
        "--prior-component", help="keep only the 3D component where the labeled volumes' "
        "structure lies (the prior `train` records in the student; better than "
        "--largest-component when the student also finds a lookalike)")] = False,
    probabilities: Annotated[bool, typer.Option(
        "--probabilities", help="also write <id>_prob.nii.gz (float32 foreground probability; several structures: the winning class's probability)")] = False,
    threshold: Annotated[float, typer.Option(help="foreground probability cut (one structure; several structures take the argmax)")] = 0.5,
    address: Annotated[Optional[str], typer.Option(
        help="fan out over Ray, one task per scan: 'local', 'auto' or ray://...")] = None,
    gpus_per_scan: Annotated[float, typer.Option(help="with --address: GPUs per scan task")] = 0.0,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 (default: auto)")] = None,
    overwrite: Annotated[bool, typer.Option(help="redo scans whose outputs are finished")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    dicom_seg: Annotated[bool, typer.Option(
        "--dicom-seg", help="also write <id>.seg.dcm (DICOM-SEG referencing the source series; "
                            "DICOM inputs only; needs highdicom)")] = False,
) -> None:
    """Segment scans with a trained student: NIfTI outputs on each input's grid and affine
    (rerunning skips finished scans)."""
    from ..predict import PredictOptions, collect_inputs
    from ..predict import predict as run_predict

    try:
        options = PredictOptions(flip_axes=_axes(flip), largest_component=largest_component,
                                 prior_component=prior_component,
                                 threshold=threshold, probabilities=probabilities)
        StudentInferenceConfig(flip_axes=options.flip_axes)  # same axis rules as the round
    except ValidationError as exc:
        raise ConfigError(f"option: {first_validation_error(exc)}") from None
    collected = collect_inputs(list(inputs))
    total = len(collected)
    if dicom_seg:  # refused before any work: highdicom missing, or an input not from DICOM
        from ..export.dicom_seg import check_dicom_inputs, require_highdicom

        require_highdicom()
        check_dicom_inputs(collected)
    with render.count_bar("predict", total, enabled=progress and not as_json) as bar:
        report = run_predict(student, inputs, out, options=options, address=address,
                             gpus_per_scan=gpus_per_scan, device=device, overwrite=overwrite,
                             on_item=lambda it: bar(it.volume_id or it.source, it.status.value))
    if dicom_seg:
        from ..export.dicom_seg import predict_dicom_segs

        predict_dicom_segs(report)
    _print_report(report, as_json)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: PredictReport, as_json: bool) -> None:
    """The predict report as JSON, or as a table and a one-line count."""
    from ..predict import PredictStatus

    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    render.predict_report(report)
    typer.echo(f"{report.count(PredictStatus.written)} written, "
               f"{report.count(PredictStatus.skipped)} skipped (finished), "
               f"{report.count(PredictStatus.failed)} failed; outputs in {report.out_dir}")
