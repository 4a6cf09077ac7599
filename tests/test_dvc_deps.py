"""dvc.yaml's code deps are what each stage really imports, so a change to any module a
stage runs re-runs that stage, and nothing else does. The import graph is read from the
code (every `import`, also inside functions), not kept by hand."""

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spkid", "stages")


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from spkid import distributed` imports a module; `from spkid.x import y` a name.
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] not in PACKAGES:
                continue
            parts = name.split(".")
            # Importing a.b.c runs every package's __init__ on the way.
            for k in range(2, len(parts) + 1):
                f = _module_file(".".join(parts[:k]))
                if f is not None:
                    found.add(f)
    return found


def stage_code(stage: str) -> set[str]:
    todo, seen = [ROOT / "stages" / f"{stage}.py"], set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += _imports(f)
    # The top-level package markers are empty files: nothing there to depend on.
    return {str(f.relative_to(ROOT)) for f in seen
            if f.relative_to(ROOT).as_posix() not in ("spkid/__init__.py", "stages/__init__.py")}


def listed_code(deps: list[str]) -> set[str]:
    """Code files a stage's deps cover (a listed folder covers every .py file below it)."""
    out = set()
    for d in deps:
        if d.split("/")[0] not in PACKAGES:
            continue
        p = ROOT / d
        out |= {str(f.relative_to(ROOT)) for f in p.rglob("*.py")} if p.is_dir() else {d}
    return out


def test_every_stage_lists_exactly_the_code_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == {"download", "features", "index", "train", "evaluate", "export", "report"}
    problems = []
    for name, stage in stages.items():
        imported, listed = stage_code(name), listed_code(stage["deps"])
        for f in sorted(imported - listed):
            problems.append(f"{name}: imports {f} but dvc.yaml does not list it")
        for f in sorted(listed - imported):
            problems.append(f"{name}: dvc.yaml lists {f} but the stage does not import it")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_function_level_imports():
    # spkid/features.py imports the HW4 loader inside a function; it still counts.
    assert "spkid/sources/hw4.py" in stage_code("features")
