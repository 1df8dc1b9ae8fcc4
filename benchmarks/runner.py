"""Run the benchmarks, check them against the baseline, print a Markdown summary.

    python -m benchmarks --profile quick         # what CI runs after the tests (< 5 min)
    python -m benchmarks --profile full          # release checks: + profilers, scenario table
    python -m benchmarks --compare old.json      # relative thresholds against earlier results
    python -m benchmarks --only epoch --plant unbounded-metric   # show that the gate can fail

Exit code 1 when a measure fails its threshold; each failure names the measure, its
value and the threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import machine_load
from benchmarks.gate import parse_threshold

BASELINE = Path(__file__).with_name("baseline.json")
SHARED = 0.10  # share of the CPUs used by other work above which the summary says so


def _groups() -> dict[str, tuple[Callable[..., dict[str, Any]], tuple[str, ...]]]:
    from benchmarks import confusion, epoch_ratio, overhead, profiler_overhead, throughput

    return {
        "epoch": (epoch_ratio.run, ("quick", "full")),
        "overhead": (overhead.run, ("quick", "full")),
        "throughput": (throughput.run, ("quick", "full")),
        "profilers": (profiler_overhead.run, ("full",)),
        "confusion": (confusion.run, ("full",)),
    }


def run_groups(profile: str, only: list[str] | None, plant: tuple[str, ...]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, (function, profiles) in _groups().items():
        if (only and name not in only) or (not only and profile not in profiles):
            continue
        print(f"running {name} ({profile})...", flush=True)
        started = machine_load.mark()
        measured = function(profile, faults=plant) if plant and name == "epoch" else function(profile)
        ended = machine_load.mark()
        others = machine_load.other_load(started, ended)
        for measure, entry in measured.items():
            entry["seconds"] = round(ended.wall - started.wall, 1)
            entry["other_load"] = None if others is None else round(others, 3)
            results[measure] = entry
    return results


def check(results: dict[str, Any], baseline: dict[str, Any], reference: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(measure, threshold, failure message or '') for every measure with a threshold."""
    rows = []
    higher = set(baseline.get("higher_is_better", []))
    for measure, text in baseline["thresholds"].items():
        if measure not in results or results[measure]["value"] is None:
            continue
        ref = reference.get(measure, {}).get("value") if reference else None
        message = parse_threshold(text).check(measure, results[measure]["value"], ref, measure in higher)
        rows.append((measure, text, message or ""))
    return rows


def summary(results: dict[str, Any], rows: list[tuple[str, str, str]], baseline: dict[str, Any], profile: str) -> str:
    thresholds = {m: (t, msg) for m, t, msg in rows}
    lines = [f"### dcnprobe benchmarks ({profile})", "", "| measure | value | threshold | result |", "|---|---|---|---|"]
    for measure, entry in results.items():
        value = entry["value"]
        shown = "-" if value is None else f"{value:.4g} {entry.get('unit', '')}".strip()
        text, message = thresholds.get(measure, ("", ""))
        verdict = "" if not text else ("**FAIL**" if message else "pass")
        goal = baseline.get("goals", {}).get(measure)
        lines.append(f"| {measure} | {shown} | {text}{f' (goal {goal})' if goal else ''} | {verdict} |")
    for entry in results.values():
        table = entry.get("detail", {}).get("table")
        if table:
            lines += ["", table]
    shared = sorted({(e["other_load"], e["seconds"]) for e in results.values() if (e.get("other_load") or 0) > SHARED})
    for load, seconds in shared:
        lines += ["", f"Note: other work used {load:.0%} of the CPUs during a {seconds:.0f} s group; "
                      "its ratios may reflect that, not the code."]
    failures = [msg for _, _, msg in rows if msg]
    lines += ["", f"{len(failures)} of {len(rows)} thresholds failed" if failures else f"all {len(rows)} thresholds pass"]
    lines += [f"- {msg}" for msg in failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--only", help="comma-separated groups: " + ", ".join(_groups()))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/results.json"))
    parser.add_argument("--compare", type=Path, help="earlier results file for relative thresholds")
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--plant", action="append", default=[], metavar="FAULT",
                        help="plant a slowdown scenario in the clean-run measure, to see the gate fail")
    args = parser.parse_args(argv)
    only = [g.strip() for g in args.only.split(",")] if args.only else None
    unknown = [g for g in only or [] if g not in _groups()]
    if unknown:
        print(f"benchmarks: error: unknown group(s) {', '.join(unknown)} (known: {', '.join(_groups())})", file=sys.stderr)
        return 2
    try:
        baseline = json.loads(args.baseline.read_text())
        reference = json.loads(args.compare.read_text())["results"] if args.compare else None
    except (OSError, ValueError, KeyError) as exc:
        print(f"benchmarks: error: cannot read {args.compare or args.baseline}: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    results = run_groups(args.profile, only, tuple(args.plant))
    rows = check(results, baseline, reference)
    document = {"profile": args.profile, "planted": args.plant, "machine": _machine(), "results": results,
                "failures": [msg for _, _, msg in rows if msg]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str))
    text = summary(results, rows, baseline, args.profile)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"\nresults: {args.out}")
    return 1 if document["failures"] else 0


def _machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform()}
