import os

import pytest

from dcnprobe.cli.train import builtin_command
from dcnprobe.harness.spec import TrialSpec
from dcnprobe.settings import Settings

# Small enough that a test epoch takes well under a second on 2 cores.
TINY_DATA = "synthetic:train_rows=8192,val_rows=4096"
TINY_BATCH = 512
# 64 batches of TINY_BATCH: enough for the statistics of a slowdown.
SMALL_DATA = "synthetic:train_rows=32768,val_rows=4096"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Generated data goes to a per-session cache, never the user's."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DCNPROBE_CACHE")
    os.environ["DCNPROBE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DCNPROBE_CACHE", None)
    else:
        os.environ["DCNPROBE_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_data(private_cache):
    from dcnprobe.model.data.source import load_data

    load_data(TINY_DATA)
    return TINY_DATA


@pytest.fixture(scope="session")
def small_data(private_cache):
    from dcnprobe.model.data.source import load_data

    load_data(SMALL_DATA)
    return SMALL_DATA


def builtin_spec(data: str = TINY_DATA, faults=(), *, settings: Settings | None = None, epochs: int = 2,
                 max_batches: int | None = 16, replicate: int = 0) -> TrialSpec:
    """A trial of the built-in trainer, as `dcnprobe bisect` without `-- CMD` runs it."""
    return TrialSpec(command=builtin_command(data=data, faults=tuple(faults)), epochs=epochs,
                     settings=settings or Settings(device="cpu", batch_size=TINY_BATCH), max_batches=max_batches,
                     replicate=replicate)
