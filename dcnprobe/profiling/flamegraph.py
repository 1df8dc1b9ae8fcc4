"""Collapsed stacks ("a;b;c 12", py-spy's raw format) to an SVG flame graph and to a
speedscope JSON profile. Both are plain files a person opens in a browser; speedscope
files also open at https://www.speedscope.app."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

Stacks = Mapping[tuple[str, ...], int]  # root-first frames -> samples

ROW = 17
_LINE = re.compile(r":\d+\)$")
WIDTH = 1200
MIN_WIDTH_PX = 0.3


def parse_collapsed(text: str) -> dict[tuple[str, ...], int]:
    stacks: dict[tuple[str, ...], int] = {}
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        key = tuple(stack.split(";"))
        stacks[key] = stacks.get(key, 0) + int(count)
    return stacks


@dataclass
class _Node:
    name: str
    samples: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Stacks) -> _Node:
    root = _Node("all")
    for frames, count in stacks.items():
        node = root
        node.samples += count
        for frame in frames:
            node = node.children.setdefault(frame, _Node(frame))
            node.samples += count
    return root


def _depth(node: _Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def _colour(name: str) -> str:
    """Warm colours, stable per function, as flame graphs usually are."""
    h = sum(ord(c) for c in name.split(" (")[0])
    return f"rgb({205 + h % 50},{80 + (h * 7) % 120},{40 + (h * 13) % 50})"


def to_svg(stacks: Stacks, title: str) -> str:
    root = _tree(stacks)
    total = max(root.samples, 1)
    depth = _depth(root)
    height = (depth + 2) * ROW + 30
    scale = (WIDTH - 20) / total
    rects: list[str] = []

    def draw(node: _Node, x: float, level: int) -> None:
        width = node.samples * scale
        if width < MIN_WIDTH_PX:
            return
        y = height - (level + 2) * ROW
        share = 100 * node.samples / total
        label = html.escape(node.name)
        chars = int(width / 7)
        text = html.escape(node.name[:chars - 2] + ".." if len(node.name) > chars else node.name) if chars > 3 else ""
        rects.append(
            f'<g><title>{label}: {node.samples} samples ({share:.1f}%)</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW - 1}" fill="{_colour(node.name)}" rx="2"/>'
            f'<text x="{x + 3:.1f}" y="{y + ROW - 5}">{text}</text></g>'
        )
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            draw(child, child_x, level + 1)
            child_x += child.samples * scale

    draw(root, 10, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" '
        f'font-size="11">\n<rect width="100%" height="100%" fill="#fdfdfd"/>\n'
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="15">{html.escape(title)}</text>\n'
        + "\n".join(rects) + "\n</svg>\n"
    )


def to_speedscope(stacks: Stacks, name: str) -> dict:
    frames: list[dict] = []
    index: dict[str, int] = {}
    samples, weights = [], []
    for stack, count in stacks.items():
        ids = []
        for frame in stack:
            if frame not in index:
                index[frame] = len(frames)
                function, _, where = frame.partition(" (")
                file, _, line = where.rstrip(")").rpartition(":")
                entry = {"name": function}
                if file:
                    entry["file"] = file
                if line.isdigit():
                    entry["line"] = int(line)
                frames.append(entry)
            ids.append(index[frame])
        samples.append(ids)
        weights.append(count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                      "endValue": sum(weights), "samples": samples, "weights": weights}],
        "name": name,
        "exporter": "dcnprobe",
    }


def write_speedscope(stacks: Stacks, name: str, path) -> None:
    path.write_text(json.dumps(to_speedscope(stacks, name)))


def function_of(frame: str) -> str:
    """'roc_auc (model/metrics.py:27)' -> 'roc_auc (model/metrics.py)': lines of one function merge."""
    return _LINE.sub(")", frame)


def function_shares(stacks: Stacks) -> dict[str, float]:
    """Inclusive share of samples per function: the fraction of samples in which the
    function is anywhere on the stack (counted once per stack, recursion or not)."""
    total = sum(stacks.values())
    shares: dict[str, float] = {}
    if not total:
        return shares
    for frames, count in stacks.items():
        for function in {function_of(f) for f in frames}:
            shares[function] = shares.get(function, 0.0) + count / total
    return shares
