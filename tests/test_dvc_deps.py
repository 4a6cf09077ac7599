"""dvc.yaml's code deps are what each stage really imports, so a change to any module a
stage runs re-runs that stage, and nothing else does. The import graph is read from the
code (every `import`, also inside functions), not kept by hand."""

import ast
import json
from pathlib import Path

import pytest
import yaml

from test_e2e import commit, copy_project, repo, run  # noqa: F401  (repo: a fixture)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spkid", "stages")


def _module_file(name: str, root: Path = ROOT) -> Path | None:
    base = root / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> list[str]:
    """Every module name an `import` in `path` may load (function-level ones too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from spkid.core import distributed` imports a module; `from spkid.x import y` a name.
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def imports(path: Path, root: Path = ROOT) -> set[Path]:
    """The project files that importing `path` runs directly."""
    found = set()
    for name in imported_names(path):
        if name.split(".")[0] not in PACKAGES:
            continue
        parts = name.split(".")
        # Importing a.b.c runs every package's __init__ on the way.
        for k in range(1, len(parts) + 1):
            f = _module_file(".".join(parts[:k]), root)
            if f is not None:
                found.add(f)
    return found


def docstring_only(path: Path) -> bool:
    """A package marker holding nothing but its docstring runs no code: editing it changes
    no output. (Once one holds code, it counts as a dep like any module.)"""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def stage_code(stage: str, root: Path = ROOT) -> set[str]:
    todo, seen = [root / "stages" / f"{stage}.py"], set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += imports(f, root)
    return {f.relative_to(root).as_posix() for f in seen
            if not (f.name == "__init__.py" and docstring_only(f))}


def listed_code(deps: list[str], root: Path = ROOT) -> set[str]:
    """Code files a stage's deps cover (a listed folder covers every .py file below it)."""
    out = set()
    for d in deps:
        if d.split("/")[0] not in PACKAGES:
            continue
        p = root / d
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        out |= {f.relative_to(root).as_posix() for f in files
                if not (f.name == "__init__.py" and docstring_only(f))}
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


def test_the_checker_sees_function_level_imports_and_package_code(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "spkid" / "a").mkdir(parents=True)
    (tmp_path / "spkid" / "__init__.py").write_text('"""Only a docstring."""\n')
    (tmp_path / "spkid" / "a" / "__init__.py").write_text("X = 1\n")
    (tmp_path / "spkid" / "a" / "late.py").write_text("")
    (tmp_path / "spkid" / "a" / "early.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text(
        "import spkid.a.early\n\ndef f():\n    from spkid.a import late\n")
    assert stage_code("s", tmp_path) == {"stages/s.py", "spkid/a/__init__.py",
                                         "spkid/a/early.py", "spkid/a/late.py"}


def _placeholder_outputs(repo: Path, stages: dict) -> None:
    """Stand-ins for every output and data dep, so that `dvc commit` can record the
    pipeline as run without running it."""
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path = repo / (next(iter(out)) if isinstance(out, dict) else out)
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("stand-in\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "stand-in.txt").write_text("stand-in\n")
        for dep in stage["deps"]:
            if dep.startswith("data/") and Path(dep).suffix:
                (repo / dep).write_text("stand-in\n")


@pytest.mark.e2e
def test_code_of_one_stage_re_runs_that_stage_only(repo):
    """Edit a module only export runs, then one only evaluate runs: `dvc status` shows that
    stage changed and train and features up to date. A module every model stage runs
    changes exactly those."""
    tmp_path, env = repo
    copy_project(tmp_path, {})
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    _placeholder_outputs(tmp_path, stages)
    run(["dvc", "commit", "-f", "-q"], tmp_path, env)
    commit(tmp_path, env, "pipeline recorded")

    def changed_after_editing(module: str) -> set[str]:
        path = tmp_path / module
        original = path.read_text()
        path.write_text(original + "\n# an edit\n")
        try:
            status = json.loads(run(["dvc", "status", "--json"], tmp_path, env).stdout)
        finally:
            path.write_text(original)
        return {name for name, why in status.items() if why != ["always changed"]}

    code = {name: stage_code(name) for name in stages}
    only = lambda stage: {f for f in code[stage]  # noqa: E731
                          if all(f not in c for n, c in code.items() if n != stage)}
    assert "spkid/serve/onnx.py" in only("export")
    assert "spkid/scoring/evaluation.py" in only("evaluate")
    assert changed_after_editing("spkid/serve/onnx.py") == {"export"}
    assert changed_after_editing("spkid/scoring/evaluation.py") == {"evaluate"}
    assert changed_after_editing("spkid/models/heads.py") == {"train", "evaluate", "export"}
