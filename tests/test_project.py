"""Promises the repository makes about itself."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dcnprobe

ROOT = Path(__file__).resolve().parent.parent
# The one module of the toolkit that starts the built-in trainer, and so may import model/.
TRAINER_COMMAND = ROOT / "dcnprobe" / "cli" / "train.py"


def fenced_block(marker):
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no block after <!-- {marker} -->"
    return match.group(1)


def imports(tree):
    """(node, module, names) for every import in a parsed file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module, [a.name for a in node.names]


def test_model_uses_only_the_public_probe_api():
    """model/ is one client of the toolkit, like any user loop: `from dcnprobe import X`
    with X in dcnprobe.__all__, never a submodule."""
    public = set(dcnprobe.__all__)
    for path in (ROOT / "model").rglob("*.py"):
        for _, module, names in imports(ast.parse(path.read_text())):
            if module.split(".")[0] != "dcnprobe" or module.split(".")[:2] == ["dcnprobe", "model"]:
                continue  # model's own modules, installed under dcnprobe's name
            where = path.relative_to(ROOT)
            assert module == "dcnprobe", f"{where} imports {module}: use the public API (from dcnprobe import ...)"
            assert set(names) <= public, f"{where} imports {set(names) - public} which dcnprobe does not export"


def test_the_toolkit_imports_model_only_where_it_starts_the_built_in_trainer():
    for path in (ROOT / "dcnprobe").rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = set(map(id, tree.body))
        for node, module, _ in imports(tree):
            if module.split(".")[:2] != ["dcnprobe", "model"]:
                continue
            assert path == TRAINER_COMMAND, f"{path.relative_to(ROOT)} imports {module}"
            assert id(node) not in top_level, f"{path.relative_to(ROOT)} imports {module} at load time, not lazily"


def test_the_trainer_command_default_preset_is_the_model_default():
    from dcnprobe.model.presets import DEFAULT_PRESET

    from dcnprobe.cli import train

    assert train.DEFAULT_PRESET == DEFAULT_PRESET


@pytest.mark.slow  # 7 s (torch and its compiler's lazy imports in a fresh process); test_probe covers the API
def test_readme_probe_example_is_short_and_runs(tmp_path):
    code = fenced_block("probe-example")
    assert len(code.strip().splitlines()) <= 15
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "my-loop" / "run.jsonl").exists()
    assert "epoch" in done.stdout


def test_ci_runs_the_readme_test_command():
    command = fenced_block("test-command").strip()
    extracted = subprocess.run(
        ["bash", "-c", "awk '/<!-- test-command -->/ {found=1; next} found && /^```sh/ {getline; print; exit}' README.md"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout.strip()
    assert extracted == command


def test_every_package_the_code_imports_is_declared():
    """A module name imported anywhere in what dcnprobe installs is a dependency of the
    distribution or of one of its extras (import name -> distribution name where they differ)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}
    distribution = {"yaml": "pyyaml", "sklearn": "scikit-learn", "pytorch_lightning": "pytorch-lightning"}
    imported = set()
    for top in ("dcnprobe", "model", "benchmarks"):
        for path in (ROOT / top).rglob("*.py"):
            for _, module, _ in imports(ast.parse(path.read_text())):
                name = module.split(".")[0]
                if name not in sys.stdlib_module_names and name not in ("dcnprobe", "__future__"):
                    imported.add(distribution.get(name, name))
    assert sorted(imported - declared) == []
