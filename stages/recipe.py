"""`spkid recipe NAME`: a named configuration as `-S` flags for `dvc exp run`."""

from __future__ import annotations

import typer

from spkid.core.recipes import RECIPES, as_flags

app = typer.Typer(add_completion=False)


@app.command()
def recipe(name: str = typer.Argument(..., help=f"one of: {', '.join(RECIPES)}")):
    """Print a recipe's params overrides: dvc exp run $(spkid recipe hw4_best)."""
    if name not in RECIPES:
        print(f"spkid: error: unknown recipe {name!r} (known: {', '.join(RECIPES)})")
        raise typer.Exit(2)
    print(" ".join(as_flags(name)))
