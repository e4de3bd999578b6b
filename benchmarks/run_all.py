"""Run every benchmarks/*.py and write benchmarks/RESULTS.md (what ``nox -s bench`` does).

    python benchmarks/run_all.py                    # all of them
    python benchmarks/run_all.py learning.py envs.py

Each script runs in its own interpreter; its printed lines are captured as they are (they
print each figure next to its target), with the machine and the versions on top. A script
that fails is reported as failed in RESULTS.md and makes the exit status non-zero, but
the others still run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
DISTRIBUTIONS = [
    "torch",
    "tensordict",
    "numpy",
    "gymnasium",
    "stable-baselines3",
    "rlblocks-core",
    "rlblocks-envs",
    "rlblocks-buffers",
    "rlblocks-objectives",
    "rlblocks-collectors",
    "rlblocks-kernel",
]


def versions() -> list[str]:
    lines = []
    for name in DISTRIBUTIONS:
        try:
            lines.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name} (not installed)")
    return lines


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load}"
    )


def main() -> int:
    names = sys.argv[1:] or sorted(
        p.name for p in HERE.glob("*.py") if p.name != Path(__file__).name
    )
    sections, failed = [], []
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(HERE / name)], capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - start
        output = result.stdout.strip()
        print(output, flush=True)
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        if result.returncode:
            failed.append(name)
            output += "\n" + result.stderr.strip()[-3000:]
        sections.append(f"## {name}: {status}, {elapsed:.0f} s\n\n```\n{output}\n```\n")
    header = [
        "# Benchmark results",
        "",
        "Written by `nox -s bench` (`python benchmarks/run_all.py`); each section is one",
        "script's output, where every figure is printed next to its target. Timings depend on",
        "the machine and its load: compare ratios measured in the same run.",
        "",
        f"- machine: {machine()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
        f"- versions: {', '.join(versions())}",
        f"- failed: {', '.join(failed) or 'none'}",
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(header) + "\n".join(sections), encoding="utf-8")
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
