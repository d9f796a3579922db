"""Packaging and layering: what imports what (read with `ast`, nothing is imported), the installed
package list, where the bundled data is found, and the CLI's one error handler and plugin point.

Layers, bottom up: onegen (library; onegen/ui alone may use gradio) <- index_builder <- benchmarks.
onegen reaches the benchmarks only through `importlib` at call time (onegen/commands/bench.py).
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from onegen import assets
from onegen.__main__ import main as cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("onegen", "index_builder", "benchmarks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The deepest folder with an __init__.py that holds `module` (itself, for a package)."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if (ROOT.joinpath(*parts[:i]) / "__init__.py").is_file():
            return ".".join(parts[:i])
    return parts[0]


def imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, at module level) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    top_level = {id(n) for n in tree.body} | {id(c) for n in tree.body if isinstance(n, (ast.If, ast.Try))
                                              for c in ast.walk(n)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                names = [f"{base}.{node.module}"] if node.module else [f"{base}.{a.name}" for a in node.names]
            else:
                names = [node.module]
            found += [(n, id(node) in top_level) for n in names]
    return found


def modules() -> dict[Path, list[tuple[str, bool]]]:
    return {p: imports(p) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_module_is_parsed():
    found = modules()
    assert any(p.name == "engine.py" for p in found) and len(found) > 60


def test_the_package_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for path, imported in modules().items():
        src = package_of(module_name(path))
        for name, _ in imported:
            if name.split(".")[0] in PACKAGES and package_of(name) != src:
                graph.setdefault(src, set()).add(package_of(name))
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        assert node not in stack, "import cycle: " + " -> ".join([*stack[stack.index(node):], node])
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*stack, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert graph["benchmarks"] >= {"onegen", "index_builder"}  # the top layer sees the others


def test_the_layers_hold():
    bad = []
    for path, imported in modules().items():
        mod = module_name(path)
        for name, top in imported:
            if in_package(mod, "onegen"):
                ui = in_package(mod, "onegen.ui")
                if in_package(name, "gradio") and not ui:
                    bad.append(f"{mod} imports gradio: only onegen/ui may")
                if in_package(name, "index_builder") or in_package(name, "benchmarks"):
                    if not ui or top:
                        bad.append(f"{mod} imports {name}: the library sits below the index builder and benchmarks")
            elif in_package(mod, "index_builder"):
                if in_package(name, "benchmarks") or in_package(name, "onegen.ui"):
                    bad.append(f"{mod} imports {name}: the index builder sits below them")
    assert not bad, "\n".join(bad)


def test_the_cli_loads_no_upper_layer():
    code = ("import sys\nfrom onegen.__main__ import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('gradio', 'index_builder', 'benchmarks') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_pyproject_lists_every_package_and_maps_the_assets():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    on_disk = {module_name(p.parent / "__init__.py") for pkg in ("onegen", "index_builder")
               for p in (ROOT / pkg).rglob("__init__.py")}
    assert listed - {assets.PACKAGE} == on_disk
    assert tool["package-dir"] == {assets.PACKAGE: "assets"}
    assert "benchmarks" not in listed  # checkout tools: `python -m onegen bench` names what is missing


@pytest.mark.slow
def test_the_wheel_carries_the_library_and_its_data(tmp_path):
    """`pip install .` in brief: build the wheel, unpack it as site-packages, run from outside the checkout."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "test-artifacts",
                                                             "__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    assert {"onegen/engine.py", "onegen/world/__main__.py", "index_builder/sources/world.py",
            "onegen_assets/models/onegen-smol/onegen_model.json", "onegen_assets/bench/single-pass.json"} <= names
    assert not any(n.startswith(("benchmarks/", "tests/", "docs/")) for n in names)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEGEN_")} | {"PYTHONPATH": str(tmp_path / "site")}
    code = "import onegen.registry as r; print(r.ASSETS, r.default_index('onegen-smol', 'multi-hop'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assets_dir, index = out.stdout.split()
    assert assets_dir == str(tmp_path / "site" / assets.PACKAGE) and Path(index, "manifest.json").is_file()
    out = subprocess.run([sys.executable, "-m", "onegen", "bench", "engine"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "the benchmarks are not installed" in out.stderr


def test_assets_are_found_in_the_checkout_or_as_the_installed_package(tmp_path, monkeypatch):
    assert assets.assets_dir() == ROOT / "assets"
    assert (assets.assets_dir() / "bench" / "single-pass.json").is_file()  # the app's sweep chart
    installed = tmp_path / "site" / assets.PACKAGE
    (installed / "examples").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert assets.locate(tmp_path / "no-checkout" / "assets") == installed
    assert assets.locate(ROOT / "assets") == ROOT / "assets"


def test_the_library_reads_nothing_under_docs():
    for path in (ROOT / "onegen").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == "docs":
                pytest.fail(f"{path.relative_to(ROOT)} builds a path into docs/: data the product reads is in assets/")


def test_one_error_handler_for_every_command(capsys, monkeypatch):
    import onegen.commands.bench as bench

    monkeypatch.setattr(bench, "PACKAGE", "benchmarks_not_here")
    assert cli(["bench", "engine"]) == 2
    assert "the benchmarks are not installed" in capsys.readouterr().err
    assert cli(["compare", "missing-a.jsonl", "missing-b.jsonl"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_world_runs_the_world_generators_command_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(["world", "--help"])
    assert exit_.value.code == 0 and "--entities" in capsys.readouterr().out
