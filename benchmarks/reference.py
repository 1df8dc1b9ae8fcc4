"""The trainer's step against FuxiCTR's DCNv3, the common implementation, in one process.

FuxiCTR's DCNv3 is two pieces: the `fuxictr` package (PyPI, the `reference` extra: its
BaseModel with the training step, FeatureMap, per-field FeatureEmbedding, optimizer and
loss lookup) and the model class itself, which FuxiCTR publishes only in its repository's
model_zoo (last in tag v2.3.6, `model_zoo/DCNv3`), not in any release on PyPI. Nothing of
it is copied here: the model class is loaded from a FuxiCTR checkout named by
DCNPROBE_FUXICTR_DCNV3 (the `model_zoo/DCNv3` folder), and without the package or that
folder every measure here is skipped with one line.

Both sides train the same architecture on the same rows: the default synthetic data's 16
categorical and 8 numeric fields, embedding dim 8, 3 + 3 cross layers (exponential and
linear, layer norm, no batch norm, one head), the preset's dropout and learning rate,
AdamW, Tri-BCE, clip norm, batch 4096, 2 intra-op threads.

- Ours is the real trainer: `fit()` with the default loader (batched, num_workers=0),
  reading each batch from the memory-mapped store, plus its bookkeeping; the stopwatch is
  its on_batch callback.
- FuxiCTR's is `BaseModel.train_step` on batches already built in memory as its loaders
  yield them (a dict of per-field tensors): its data loading is not counted, which can
  only make the ratio look worse for us.

Rounds alternate (FuxiCTR block, trainer block) so that the machine's drift hits both;
the ratio is FuxiCTR's median step time over ours (our samples/s over FuxiCTR's: above 1
means the trainer is faster), levelled per round pair, with a bootstrap interval over
round pairs (benchmarks.timing.paired_ratio).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from dcnprobe.benchmarks.timing import WARMUP_BATCHES, batch_times, paired_ratio
from dcnprobe.model.data.loader import EpochBatchSampler
from dcnprobe.model.data.source import load_data
from dcnprobe.model.data.table import CTRData
from dcnprobe.model.gated_dcnv3 import ModelConfig
from dcnprobe.model.presets import PRESETS, Hyperparams
from dcnprobe.model.trainer import TrainJob

from dcnprobe.settings import Settings

SOURCE_ENV = "DCNPROBE_FUXICTR_DCNV3"
# The default data's fields and vocabularies (16 categorical, 8 numeric), with 64 batches
# of training rows and one of validation: each round's fit() validates, and validating
# the default 131k rows would cost as much as the batches it times.
DATA = "synthetic:train_rows=262144,val_rows=4096"
INSTALL_HINT = "pip install -c constraints.txt -e '.[reference]'"
THREADS = 2
SETTINGS = Settings(device="cpu", num_workers=0, batch_size=4096, threads=THREADS)
# The same architecture as FuxiCTR's DCNv3: no deep branch or gate, Tri-BCE as it trains.
SAME_ARCHITECTURE = ModelConfig(gated=False, tri_bce=True)
# (round pairs, batches per block): a block's first WARMUP_BATCHES are dropped.
ROUNDS = {"quick": (6, 10), "full": (10, 14)}


class Unavailable(Exception):
    """The reference cannot be built here; the message is the one line that says why."""


@dataclass(frozen=True)
class Reference:
    dcnv3: type  # FuxiCTR's DCNv3 class
    feature_map_class: type
    source: Path
    source_sha256: str
    fuxictr_version: str


def load_reference() -> Reference:
    """FuxiCTR's DCNv3 class from the installed package and the model_zoo folder, or
    Unavailable with the reason."""
    try:
        import fuxictr  # heavy (pulls scikit-learn, polars): imported only when measuring
        from fuxictr.features import FeatureMap
    except ImportError as exc:
        raise Unavailable(f"the fuxictr package is not importable ({exc}); install it with {INSTALL_HINT}") from None
    folder = os.environ.get(SOURCE_ENV)
    if not folder:
        raise Unavailable(f"{SOURCE_ENV} is not set: point it at model_zoo/DCNv3 of a FuxiCTR checkout "
                          "(tag v2.3.6); the fuxictr package on PyPI does not ship its DCNv3 model")
    package = Path(folder).expanduser() / "src"
    source = package / "DCNv3.py"
    if not source.is_file():
        raise Unavailable(f"{SOURCE_ENV}={folder} has no src/DCNv3.py (expected FuxiCTR's model_zoo/DCNv3)")
    try:
        module = _import_package("fuxictr_model_zoo_dcnv3", package)
        dcnv3 = module.DCNv3
    except Exception as exc:  # a checkout that does not import with this fuxictr: say so, do not crash
        raise Unavailable(f"FuxiCTR's DCNv3 from {package} does not import: {type(exc).__name__}: {exc}") from None
    return Reference(dcnv3, FeatureMap, source, hashlib.sha256(source.read_bytes()).hexdigest(),
                     getattr(fuxictr, "__version__", "?"))


def _import_package(name: str, folder: Path) -> ModuleType:
    """Import `folder` (a package: model_zoo's src/ with relative imports) under `name`,
    so that its generic folder name cannot clash with anything on sys.path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise ImportError(f"no package at {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


# -- FuxiCTR's side --------------------------------------------------------------------

def _feature_map(reference: Reference, data: CTRData, workdir: Path):
    """A FuxiCTR FeatureMap of our schema, written and loaded the way FuxiCTR's own
    preprocessing hands it to a model (feature_map.json)."""
    schema = data.schema
    features = [{name: {"source": "", "type": "categorical", "vocab_size": int(size)}}
                for name, size in zip(schema.categorical, schema.vocab_sizes)]
    features += [{name: {"source": "", "type": "numeric"}} for name in schema.numeric]
    document = {"dataset_id": "dcnprobe_synthetic", "num_fields": len(features),
                "total_features": int(sum(schema.vocab_sizes)) + len(schema.numeric),
                "input_length": len(features), "labels": ["label"], "features": features}
    path = workdir / "feature_map.json"
    path.write_text(json.dumps(document))
    feature_map = reference.feature_map_class(document["dataset_id"], str(workdir))
    feature_map.load(str(path), {"embedding_dim": SAME_ARCHITECTURE.embedding_dim})
    return feature_map


def build_fuxictr(reference: Reference, data: CTRData, hp: Hyperparams, seed: int, workdir: Path):
    torch.manual_seed(seed)
    model = reference.dcnv3(
        _feature_map(reference, data, workdir), gpu=-1, learning_rate=hp.learning_rate,
        embedding_dim=SAME_ARCHITECTURE.embedding_dim,
        num_deep_cross_layers=SAME_ARCHITECTURE.cross_layers,
        num_shallow_cross_layers=SAME_ARCHITECTURE.cross_layers,
        deep_net_dropout=hp.dropout, shallow_net_dropout=hp.dropout,
        layer_norm=True, batch_norm=False, num_heads=1,
        optimizer="AdamW", loss="binary_crossentropy",
        verbose=0, model_root=str(workdir), metrics=["AUC"])
    # BaseModel.fit sets this before its first train_step; the step itself is what we time.
    model._max_gradient_norm = hp.clip_norm
    model.train()
    return model


def fuxictr_batches(data: CTRData, batches: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """The rows our trainer's first `batches` batches read, as FuxiCTR's loaders yield
    a batch: one tensor per field and the label."""
    schema = data.schema
    sampler = EpochBatchSampler(len(data.train), SETTINGS.batch_size, seed, batches)
    built = []
    for index in sampler:
        categorical, numeric, label = data.train.rows(index)
        batch = {name: torch.from_numpy(categorical[:, i].astype(np.int64)) for i, name in enumerate(schema.categorical)}
        batch.update({name: torch.from_numpy(np.ascontiguousarray(numeric[:, i])) for i, name in enumerate(schema.numeric)})
        batch["label"] = torch.from_numpy(np.asarray(label, dtype=np.float32))
        built.append(batch)
    return built


def fuxictr_times(model, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """Seconds between successive ends of FuxiCTR's train_step, warm-up dropped."""
    torch.set_num_threads(THREADS)
    stamps = [time.perf_counter()]
    for batch in batches:
        model.train_step(batch)
        stamps.append(time.perf_counter())
    return np.diff(stamps)[WARMUP_BATCHES:]


# -- the comparison --------------------------------------------------------------------

@dataclass(frozen=True)
class Contender:
    """One configuration of our trainer to hold against FuxiCTR's DCNv3."""

    measure: str
    preset: str
    model: ModelConfig
    what: str


SAME = Contender("trainer_vs_fuxictr", "phase3-revised", SAME_ARCHITECTURE,
                 "the trainer on FuxiCTR's DCNv3 architecture")
GATED = [Contender(f"gated_vs_fuxictr_{name.replace('-', '_')}", name, ModelConfig(),
                   f"the full gated model, preset {name}") for name in PRESETS]


def compare(contender: Contender, profile: str, reference: Reference | None = None) -> dict[str, Any]:
    """Our trainer's samples/s over FuxiCTR's DCNv3's in alternating rounds, as a paired
    ratio with its bootstrap interval."""
    reference = reference or load_reference()
    rounds, batches = ROUNDS[profile]
    hp = PRESETS[contender.preset]
    data = load_data(DATA)
    job = TrainJob(settings=SETTINGS, preset=contender.preset, epochs=1, max_batches=batches,
                   model=contender.model, data=DATA, checkpoints=False)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        theirs = build_fuxictr(reference, data, hp, SETTINGS.seed, Path(workdir))
        feed = fuxictr_batches(data, batches, SETTINGS.seed)
        # (True, FuxiCTR) then (False, ours) in each pair: paired_ratio's measured/bare is
        # FuxiCTR's time over ours, i.e. our speed-up.
        segments: list[tuple[bool, list[float]]] = []
        for _ in range(rounds):
            segments.append((True, list(fuxictr_times(theirs, feed))))
            segments.append((False, list(batch_times(job))))
    result = paired_ratio(segments)
    detail = result["detail"]
    result["detail"] = {
        "what": f"{contender.what}: samples/s over FuxiCTR DCNv3's (above 1: ours is faster)",
        "ours_samples_per_s": round(SETTINGS.batch_size / detail["bare_median_s"]),
        "fuxictr_samples_per_s": round(SETTINGS.batch_size / detail["measured_median_s"]),
        "pooled_median_ratio": detail["pooled_median_ratio"],
        "round_pairs": rounds, "batches_each": detail["batches_each"], "batch_size": SETTINGS.batch_size,
        "threads": THREADS, "preset": contender.preset, "model": {"gated": contender.model.gated,
                                                                 "tri_bce": contender.model.tri_bce},
        "fuxictr": reference.fuxictr_version, "dcnv3_source_sha256": reference.source_sha256,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    return result


def measure_same_architecture(profile: str, faults: tuple[str, ...] = ()) -> dict[str, Any]:
    """The gate's measure, also what the runner measures again when unsure."""
    try:
        return compare(SAME, profile)
    except Unavailable as exc:
        return skipped(SAME.measure, str(exc))


def skipped(measure: str, why: str) -> dict[str, Any]:
    return {"value": None, "unit": "ratio", "skipped": why}


def run(profile: str) -> dict[str, Any]:
    """Quick: the trainer on the same architecture (the gate). Full: also the gated
    model with each of the study's presets."""
    contenders = [SAME] + (GATED if profile == "full" else [])
    try:
        reference = load_reference()
    except Unavailable as exc:
        print(f"  reference: skipped: {exc}", flush=True)
        return {c.measure: skipped(c.measure, str(exc)) for c in contenders}
    results: dict[str, Any] = {}
    for contender in contenders:
        results[contender.measure] = compare(contender, profile, reference)
    return results
