"""Per-epoch checkpoints: everything needed to continue as if never interrupted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dcnprobe import UsageError


def checkpoint_path(out: Path, epoch: int) -> Path:
    return out / "checkpoints" / f"epoch-{epoch}.pt"


def save(out: Path, epoch: int, state: dict[str, Any]) -> None:
    path = checkpoint_path(out, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # never leave half a checkpoint under the real name


def latest(out: Path) -> Path | None:
    folder = out / "checkpoints"
    found = sorted(folder.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1])) if folder.is_dir() else []
    return found[-1] if found else None


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a torn or foreign file: say which and why
        raise UsageError(f"cannot read checkpoint {path}: {exc}") from None


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    if "mps" in state and device.type == "mps":
        torch.mps.set_rng_state(state["mps"])
