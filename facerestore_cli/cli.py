"""The ``facerestore`` command line: thin Typer commands over the library."""

from __future__ import annotations

import typer

from facerestore_cli import cli_train

app = typer.Typer(add_completion=False, no_args_is_help=True)
app.add_typer(cli_train.app, name="train")


def main() -> None:
    app(prog_name="facerestore")
