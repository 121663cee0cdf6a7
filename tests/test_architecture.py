"""The house rules, checked: imports flow one way, uni2ts stays behind one boundary, no folder hides from tools.

docs/architecture.md is the map these tests keep honest.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "ohlcv"
BOUNDARY = "ohlcv.moirai"  # the only package that imports uni2ts


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path):
    """(module imported, names imported from it) for every import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            yield module, [alias.name for alias in node.names]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for module, names in _imports(name, path):
            if not module.startswith("ohlcv"):
                continue
            for imported in names or [""]:
                target = f"{module}.{imported}" if f"{module}.{imported}" in modules else module
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules():
    # imports inside functions count too: a cycle held by a late import is still a cycle
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    private = []
    for name, path in modules.items():
        for module, names in _imports(name, path):
            if module.startswith("ohlcv") and module != name:
                private += [f"{name} imports {module}.{n}" for n in names
                            if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
    assert private == []


def test_only_the_model_boundary_imports_uni2ts():
    outside = sorted({name for name, path in _modules().items() if not name.startswith(BOUNDARY)
                      for module, _ in _imports(name, path) if module.split(".")[0] == "uni2ts"})
    assert outside == []


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_dataset_format_reaches_no_package_that_uses_it():
    """Not directly, and not through another module (config, say): the format sits below its users."""
    users = ("ohlcv.builder", "ohlcv.train", "ohlcv.evaluate", "ohlcv.moirai", "ohlcv.cli", "ohlcv.render")
    graph = _graph()
    reaching = sorted((name, target) for name in graph if name.startswith("ohlcv.dataset")
                      for target in _reachable(graph, name) if target.startswith(users))
    assert reaching == []


def test_the_lowest_layer_reaches_no_command_package():
    """config, errors, freq, calendars and features are imported by everything and import none of the commands."""
    commands = ("ohlcv.builder", "ohlcv.train", "ohlcv.evaluate", "ohlcv.moirai", "ohlcv.cli", "ohlcv.dataset")
    graph = _graph()
    low = [n for n in graph if n.startswith(("ohlcv.config", "ohlcv.errors", "ohlcv.freq", "ohlcv.calendars",
                                             "ohlcv.features"))]
    reaching = sorted((name, target) for name in low for target in _reachable(graph, name) if target.startswith(commands))
    assert reaching == []


# The folders of GitHub's standard Python .gitignore template (github/gitignore, Python.gitignore) that
# could match a source folder: tools that skip build output skip these.
PYTHON_TEMPLATE = """
__pycache__/
*.py[cod]
*.so
.Python
build/
develop-eggs/
dist/
downloads/
eggs/
.eggs/
lib/
lib64/
parts/
sdist/
var/
wheels/
share/python-wheels/
*.egg-info/
.installed.cfg
*.egg
MANIFEST
htmlcov/
.tox/
.nox/
.coverage
.cache
.hypothesis/
.pytest_cache/
cover/
instance/
.webassets-cache
.scrapy
docs/_build/
target/
.ipynb_checkpoints
profile_default/
.env
.venv
env/
venv/
ENV/
env.bak/
venv.bak/
.spyderproject
.ropeproject
site
.mypy_cache/
.pyre/
.pytype/
cython_debug/
"""


def test_the_standard_python_gitignore_ignores_no_source_file(tmp_path):
    sources = [str(p.relative_to(REPO)) for p in REPO.glob("src/**/*.py")]
    sources += [str(p.relative_to(REPO)) for p in REPO.glob("plugins/**/*.py")]
    sources += [str(p.relative_to(REPO)) for p in REPO.glob("profiles/*.yaml")]
    assert any("/builder/" in s for s in sources)
    (tmp_path / ".gitignore").write_text(PYTHON_TEMPLATE)
    if subprocess.run(["git", "init", "-q", str(tmp_path)], capture_output=True).returncode != 0:
        pytest.skip("git is not available")
    result = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "--no-index", "--stdin"],
                            input="\n".join(sources), capture_output=True, text=True)
    assert result.stdout.split() == []
    probe = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "--no-index", "src/ohlcv/build/x.py"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "src/ohlcv/build/x.py"  # the template does ignore a package named build


def test_no_package_or_module_is_named_build():
    assert not [p for p in PACKAGE.rglob("*") if p.stem == "build" and "__pycache__" not in p.parts]


def test_the_cli_prints_nothing_itself():
    """Every line goes through render.py: the CLI parses, calls one library function and renders."""
    source = (PACKAGE / "cli.py").read_text()
    assert "print(" not in source and "typer.echo" not in source and "sys.stdout.write" not in source
