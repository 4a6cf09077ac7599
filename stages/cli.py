"""The `spkid` console script: every DVC stage as a subcommand.

Only the module of the command being run is imported (the others pull in torch and
friends for nothing: `spkid report` starts in 0.1 s instead of 4); `spkid --help` imports
them all to list them."""

from __future__ import annotations

import importlib
import sys

import typer

# command -> module under stages/ that defines it
COMMANDS = {"download": "download", "features": "features", "index": "index", "train": "train",
            "evaluate": "evaluate", "export": "export", "report": "report",
            "embed": "inference", "verify": "inference", "predict": "inference",
            "enroll": "identify", "identify": "identify", "recipe": "recipe"}


def build_app(command: str | None = None) -> typer.Typer:
    """The `spkid` app with `command`'s module registered, or every module's."""
    app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="spkid: speaker-recognition pipeline stages (run them through `dvc repro`).")

    @app.callback()
    def _group() -> None:
        """spkid: speaker-recognition pipeline stages (run them through `dvc repro`)."""

    names = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in names:
        for registered in importlib.import_module(f"stages.{name}").app.registered_commands:
            app.registered_commands.append(registered)
    return app


def main() -> None:
    build_app(sys.argv[1] if len(sys.argv) > 1 else None)()


if __name__ == "__main__":
    sys.exit(main())
