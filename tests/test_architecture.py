"""The shape of the library, read from the code: subpackages import only the layers below
them, no module imports itself back through others, the library never imports the
commands, and an import inside a function says why it is there."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each subpackage may import besides itself (spkid/__init__.py says why).
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "features": {"core", "data"},
    "models": {"core", "features"},
    "report": {"core"},
    "train": {"core", "data", "features", "models", "report"},
    "scoring": {"core", "data", "features", "models", "report"},
    "serve": {"core", "data", "features", "models", "scoring"},
}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module under spkid/ and stages/."""
    out = {}
    for top in ("spkid", "stages"):
        for f in sorted((ROOT / top).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


MODULES = modules()


def imports(path: Path) -> list[tuple[ast.stmt, str]]:
    """(statement, project module it loads) of every import in `path`: the module itself,
    or for `from package import name` the submodule `name` when there is one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]
        else:
            continue
        found += [(node, n) for n in names if n in MODULES]
    return found


def layer(module: str) -> str | None:
    """The subpackage of spkid a module belongs to (None: spkid itself, or stages)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "spkid" and len(parts) > 1 and parts[1] in ALLOWED else None


def test_every_subpackage_is_in_the_layer_table():
    packages = {p.name for p in (ROOT / "spkid").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED)


def test_subpackages_import_only_the_layers_below_them():
    problems = []
    for name, path in MODULES.items():
        own = layer(name)
        if own is None:
            continue
        for node, target in imports(path):
            other = layer(target)
            if target.startswith("stages"):
                problems.append(f"{name} imports the command layer {target}")
            elif other is not None and other != own and other not in ALLOWED[own]:
                problems.append(f"{name} (line {node.lineno}) imports {target}: {own} may "
                                f"import only {sorted(ALLOWED[own]) or 'nothing of spkid'}")
    assert not problems, "\n".join(problems)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of the directed graph as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for nxt in graph.get(name, []):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[name] = "done"
        return None

    for name in graph:
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_cycles():
    graph = {name: sorted({t for _, t in imports(path) if t != name})
             for name, path in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _function_imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


@pytest.mark.parametrize("name", sorted(MODULES))
def test_an_import_inside_a_function_says_why(name):
    """Imports belong at the top; one inside a function (start-up time, an optional extra)
    carries its reason as a comment on its line or the line above."""
    lines = MODULES[name].read_text().splitlines()
    bare = [f"line {n.lineno}: {lines[n.lineno - 1].strip()}"
            for n in _function_imports(MODULES[name])
            if "#" not in lines[n.lineno - 1] and not lines[n.lineno - 2].strip().startswith("#")]
    assert not bare, f"{MODULES[name]}: in-function imports without a reason: {bare}"


def test_the_checks_see_what_they_check(tmp_path):
    """The cycle finder finds a cycle, the layers are told apart, and in-function imports
    are found wherever they are."""
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None
    f = tmp_path / "m.py"
    f.write_text("def g():\n    import os\n\n\ndef h():\n    # why\n    import sys\n")
    assert [n.lineno for n in _function_imports(f)] == [2, 7]
    assert layer("spkid.train.loop") == "train" and layer("spkid.core") == "core"
    assert layer("spkid") is None and layer("stages.train") is None
