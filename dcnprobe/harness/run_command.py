"""Run a command with the probe attached, show its output, and stop it cleanly.

`dcnprobe run` is a face over `run_attached`: the command runs in a new process group
(dcnprobe.harness.launch), so that Ctrl-C, or dcnprobe dying, ends it with its DataLoader
workers; its output goes to DIR/output.log and to the terminal (dcnprobe.harness.relay).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dcnprobe.contract import AttachConfig
from dcnprobe.distributed.layout import record_files
from dcnprobe.harness import launch
from dcnprobe.harness.relay import OutputRelay
from dcnprobe.records import RUN_FILE

OUTPUT_FILE = "output.log"
POLL_S = 0.1


@dataclass
class Outcome:
    exit_code: int
    record: Path  # DIR/run.jsonl; it may not exist (nor in a distributed run: DIR/rankN/run.jsonl)
    output: Path  # DIR/output.log
    started_training: bool  # the run record (a rank's, in a distributed run) was begun
    interrupted: bool
    last_line: str  # the command's last line of output


def run_attached(argv: Sequence[str], config: AttachConfig, terminal: IO[str] | None = None,
                 grace_s: float = 10.0) -> Outcome:
    out = Path(config.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    record, output = out / RUN_FILE, out / OUTPUT_FILE
    relay = OutputRelay(output, lambda: bool(record_files(out)), terminal or sys.stdout)
    interrupted = False
    with open(output, "wb") as log:
        proc = launch.start(argv, config, output=log)
        try:
            while proc.poll() is None:
                relay.pump()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            interrupted = True
            launch.interrupt(proc, grace_s)  # SIGINT first, so the script writes its footer
        finally:
            proc.wait()
            launch.kill(proc)  # whatever it left behind in its group: workers, helpers
    relay.pump()
    relay.flush_rest()
    started = bool(record_files(out))
    if started or proc.returncode == 0:
        relay.release()
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    return Outcome(code, record, output, started, interrupted, relay.last_line())
