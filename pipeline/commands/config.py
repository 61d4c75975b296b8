"""`semisam config`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..cli_app import app, guard
from ..presentation import render


@app.command()
@guard
def config(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable list")] = False,
) -> None:
    """The SEMISAM_* environment variables: each one's value here (or unset), default and
    meaning; an invalid value is refused in one line naming the variable."""
    from semisam.schemas.settings import describe_settings, load_settings

    load_settings()  # refuse invalid values (one line) before listing them
    listing = describe_settings()
    if as_json:
        typer.echo(listing.model_dump_json(indent=2))
        return
    rows = [(v.name, "unset" if v.value is None else v.value,
             "-" if v.default is None else v.default, v.description) for v in listing.variables]
    render.print_table("settings (environment variables)",
                       ("variable", "value", "default", "description"), rows, fold=True)
    for name in listing.unknown:
        render.print_line(f"{name} is set but is not a semisam setting (a typo?)")
