"""A command: the unit that dcnprobe runs, attaches to, bisects, profiles and watches.

Any training script is one (`python train.py --lr 3e-4`), and so is the built-in trainer
(`python -m dcnprobe train ...`). Settings reach a command from outside (DataLoader
arguments, threads, cache clearing: see dcnprobe.attach) or through placeholders in its
words: `python train.py --device {device} --workers {num_workers}`. `{out}` is the run's
directory.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcnprobe.errors import UsageError
from dcnprobe.settings import APPLIED_FROM_OUTSIDE, SETTING_NAMES, Settings, format_value

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")
OUT = "out"
# Files hashed into a trial's cache key: a script's own directory, not a whole home folder.
MAX_HASHED_FILES = 2000


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    # The built-in trainer takes every setting as an option and uses the Probe API.
    builtin: bool = False
    # Where the code it runs lives, when that is not the script's folder or the module's
    # package (the built-in trainer runs `python -m dcnprobe` on code in model/).
    code_roots: tuple[str, ...] = ()

    @classmethod
    def parse(cls, words: Sequence[str], builtin: bool = False, code_roots: Sequence[str] = ()) -> Command:
        """Check a user's command before anything runs: one clear line for each mistake."""
        argv = tuple(words)
        if not argv or not argv[0].strip():
            raise UsageError("the command after -- is empty (example: dcnprobe run -- python train.py)")
        command = cls(argv, builtin, tuple(str(r) for r in code_roots))
        for name in command.placeholders:
            if name != OUT and name.replace("-", "_") not in SETTING_NAMES:
                raise UsageError(f"placeholder {{{name}}} in the command names no setting "
                                 f"(known: {{{OUT}}}, {', '.join('{' + n + '}' for n in SETTING_NAMES)})")
        if not builtin:
            if shutil.which(argv[0]) is None and not Path(argv[0]).is_file():
                raise UsageError(f"command not found: {argv[0]}")
            script = command.script
            if script is not None and not script.exists():
                raise UsageError(f"no such script: {script}")
        return command

    @property
    def placeholders(self) -> set[str]:
        return {m.group(1) for word in self.argv for m in PLACEHOLDER.finditer(word)}

    def takes(self, setting: str) -> bool:
        """Whether this command can be given `setting`: from outside, or by placeholder."""
        return self.builtin or setting in APPLIED_FROM_OUTSIDE or setting in self.placeholders

    def render(self, settings: Settings, out: Path) -> list[str]:
        values = {k: format_value(v) for k, v in settings.to_dict().items()}
        values[OUT] = str(out)

        def fill(match: re.Match) -> str:
            return values[match.group(1).replace("-", "_")]

        return [PLACEHOLDER.sub(fill, word) for word in self.argv]

    def text(self) -> str:
        return shlex.join(self.argv)

    @property
    def is_python(self) -> bool:
        return Path(self.argv[0]).name.startswith("python") or self.argv[0] == sys.executable

    @property
    def script(self) -> Path | None:
        """The script a `python path/to/train.py ...` runs, when it is one."""
        if not self.is_python:
            return Path(self.argv[0]) if self.argv[0].endswith(".py") else None
        for word in self.argv[1:]:
            if word == "-m" or word == "-c":
                return None
            if word.startswith("-"):
                continue
            return Path(word)
        return None

    @property
    def module(self) -> str | None:
        if self.is_python and "-m" in self.argv[1:-1]:
            return self.argv[self.argv.index("-m", 1) + 1]
        return None

    def code_digest(self) -> str:
        """A hash of the code this command runs: the script's folder (its .py files), or the
        module's package. Part of a trial's cache key: edit the script, and cached trials
        of the old code are not reused."""
        digest = hashlib.sha256()
        for path in self.code_files():
            digest.update(str(path).encode())
            try:
                digest.update(path.read_bytes())
            except OSError:
                continue
        return digest.hexdigest()[:16]

    def code_files(self) -> list[Path]:
        roots = [Path(r) for r in self.code_roots] or [r for r in [self._code_root()] if r is not None]
        files: list[Path] = []
        for root in roots:
            if root.is_file():
                files.append(root)
            else:
                files += sorted(p for p in root.rglob("*.py") if ".venv" not in p.parts and "site-packages" not in p.parts)
        return files[:MAX_HASHED_FILES]

    def _code_root(self) -> Path | None:
        script = self.script
        if script is not None:
            return script.resolve().parent
        module = self.module
        if module is not None:
            return _module_root(module)
        return None

    def to_json(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "builtin": self.builtin, "code_roots": list(self.code_roots)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Command:
        return cls(tuple(data["argv"]), bool(data.get("builtin")), tuple(data.get("code_roots", ())))


@functools.cache
def _module_root(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return None
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin
