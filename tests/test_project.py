"""Promises the repository makes about itself."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# model/ may use only dcnprobe's leaf modules: the probe interface, settings, device
# backends and the error type. Never the harness, the analysis, the report or the CLI.
MODEL_MAY_IMPORT = {"dcnprobe.hooks", "dcnprobe.settings", "dcnprobe.devices", "dcnprobe.errors", "dcnprobe.glibc"}


def fenced_block(marker):
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no block after <!-- {marker} -->"
    return match.group(1)


def test_model_depends_only_on_the_probe_interface():
    for path in (ROOT / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.startswith("dcnprobe"):
                    assert name in MODEL_MAY_IMPORT, f"{path.relative_to(ROOT)} imports {name}"


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
    assert "README" in (ROOT / ".ci" / "run").read_text()
