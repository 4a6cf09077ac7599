"""The `spkid` console script: every DVC stage as a subcommand."""

from __future__ import annotations

import sys

import typer

from stages import download, evaluate, export, features, index, inference, recipe, report, train

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="spkid: speaker-recognition pipeline stages (run them through `dvc repro`).")
for module in (download, features, index, train, evaluate, export, report, inference, recipe):
    for command in module.app.registered_commands:
        app.registered_commands.append(command)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
