"""What dcnprobe installs: one top-level name, never shadowed by a user's files.

Users run dcnprobe from their own project folders, which hold a `model.py`, a `model/`
package, a `benchmarks.py`, sometimes a `dcnprobe.py`. Nothing dcnprobe installs may
collide with them: the built-in model and the benchmarks live under `dcnprobe.`, and the
commands dcnprobe starts never look in the working folder for their own modules.
"""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent

SHADOWS = {
    "model.py": "raise ImportError('the user model.py was imported')\n",
    "model/__init__.py": "raise ImportError('the user model/ package was imported')\n",
    "benchmarks.py": "raise ImportError('the user benchmarks.py was imported')\n",
    "dcnprobe.py": "raise ImportError('the user dcnprobe.py was imported')\n",
}


def shadowing_folder(path: Path) -> Path:
    for name, text in SHADOWS.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def installed_packages() -> dict[str, Path]:
    """Import name -> repository folder, as pyproject.toml maps them."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = tool["package-dir"]
    mapped = {}
    for name in tool["packages"]:
        parent = max((r for r in roots if name == r or name.startswith(r + ".")), key=len)
        mapped[name] = ROOT / roots[parent] / Path(*name[len(parent):].lstrip(".").split(".") if name != parent else ())
    return mapped


def test_every_package_folder_is_installed_under_dcnprobe():
    mapped = installed_packages()
    assert all(name.split(".")[0] == "dcnprobe" for name in mapped)
    folders = {p.parent for top in ("dcnprobe", "model", "benchmarks") for p in (ROOT / top).rglob("__init__.py")}
    assert {folder.resolve() for folder in mapped.values()} == {f.resolve() for f in folders}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return next(out.glob("dcnprobe-*.whl"))


def test_the_wheel_installs_one_top_level_name_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"dcnprobe"}
    for needed in ("dcnprobe/model/trainer.py", "dcnprobe/model/data/synthetic.py", "dcnprobe/benchmarks/runner.py",
                   "dcnprobe/benchmarks/baseline.json", "dcnprobe/attach/site/sitecustomize.py"):
        assert needed in names


@pytest.mark.slow
def test_bisect_and_sweep_from_a_folder_that_shadows_every_name(wheel, tmp_path):
    """The wheel (not the editable checkout) installed apart, run from a folder holding
    model.py, model/, benchmarks.py and dcnprobe.py: both commands run their trials."""
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = shadowing_folder(tmp_path / "project")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    cli = [sys.executable, "-c", "import sys; del sys.path[0]; from dcnprobe.cli import main; main()"]
    sweep = subprocess.run([*cli, "sweep", "--vary", "num_workers=0", "--max-batches", "10", "--out", "sweep"],
                           cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    trials = json.loads((folder / "sweep" / "sweep.json").read_text())["trials"]
    assert [t["status"] for t in trials] and all(t["status"] in ("ok", "slow") for t in trials), trials
    bisect = subprocess.run([*cli, "bisect", "--max-batches", "10", "--out", "bisect"],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert bisect.returncode == 0, bisect.stdout + bisect.stderr
    result = json.loads((folder / "bisect" / "bisect.json").read_text())
    assert all(t["status"] in ("ok", "slow") for t in result["trials"]), result["trials"]
    assert "user" not in bisect.stdout + bisect.stderr + sweep.stdout + sweep.stderr


@pytest.mark.slow  # 4 s; the slow bisect/sweep test runs the whole path from a folder of shadows
def test_dcnprobe_as_a_module_ignores_the_working_folder(tmp_path):
    """How dcnprobe starts its own processes (the built-in trainer, the benchmarks):
    `python -P -m dcnprobe ...` from a folder of shadows still finds the installed model."""
    from dcnprobe.executables import python_module

    done = subprocess.run([*python_module("dcnprobe"), "faults"], cwd=shadowing_folder(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "worker-stall" in done.stdout
