"""Run every benchmarks/*.py and write benchmarks/RESULTS.md (what ``nox -s bench`` does).

    python benchmarks/run_all.py                    # all of them
    python benchmarks/run_all.py learning.py envs.py   # re-run these, keep the others
    python benchmarks/run_all.py "learning.py --settings ppo-zoo --seeds 1"   # with arguments

A section of RESULTS.md is one command (script and arguments): re-running the same command
replaces its section, and a script run with other arguments gets a section of its own.

Each script runs in its own interpreter (``_*.py`` files are helpers they import, not
scripts); its printed lines are captured as they are (they print each figure next to its
target), with the machine and the versions on top. Every section records when it ran and
the load average then, so sections re-run later sit next to the kept ones honestly. A
script that fails (or reports a missed target through its exit status) is marked in
RESULTS.md and makes the exit status non-zero, but the others still run.
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
    "dm-control",
    "mujoco",
    "vmas",
    "pettingzoo",
    "mpe2",
    "minari",
    "h5py",
    "ale-py",
    "opencv-python-headless",
    "transformers",
    "rlblocks-core",
    "rlblocks-envs",
    "rlblocks-buffers",
    "rlblocks-objectives",
    "rlblocks-collectors",
    "rlblocks-kernel",
    "rlblocks-dmcontrol",
    "rlblocks-vmas",
    "rlblocks-pettingzoo",
    "rlblocks-minari",
    "rlblocks-d4rl",
    "rlblocks-atari",
    "rlblocks-llm",
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
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )


SECTION = "## "


def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "?"
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def kept_sections(path: Path, rerun: set[str]) -> dict[str, str]:
    """The sections of an existing RESULTS.md, by script name, except those in ``rerun``."""
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    kept = {}
    for chunk in text.split("\n" + SECTION)[1:]:
        name = chunk.split(": exit", 1)[0].strip()
        if name not in rerun:
            kept[name] = SECTION + chunk.rstrip() + "\n"
    return kept


def main() -> int:
    # `_name.py` files are helpers the scripts import, not benchmarks.
    all_names = sorted(
        p.name for p in HERE.glob("*.py") if p.name != Path(__file__).name and p.name[0] != "_"
    )
    # An entry may carry the script's arguments: "learning.py --settings ppo-zoo --seeds 1".
    commands = [entry.split() for entry in sys.argv[1:]] or [[n] for n in all_names]
    results = HERE / "RESULTS.md"
    # A section is one command: re-running it replaces it, other arguments add another.
    sections = kept_sections(results, {" ".join(c) for c in commands}) if sys.argv[1:] else {}
    failed = []
    for name, *script_args in commands:
        shown = " ".join([name, *script_args])
        print(f"== {shown}", flush=True)
        when, load = time.strftime("%Y-%m-%d %H:%M"), load_average()
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(HERE / name), *script_args],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        output = result.stdout.strip()
        print(output, flush=True)
        status = f"exit {result.returncode}"
        if result.returncode:
            failed.append(name)
            output += "\n" + result.stderr.strip()[-3000:]
        sections[shown] = (
            f"{SECTION}{shown}: {status}, {elapsed:.0f} s (started {when}, load average {load})"
            + f"\n\n```\n{output}\n```\n"
        )
    marked = [n for n, text in sections.items() if ": exit 0," not in text.splitlines()[0]]
    header = [
        "# Benchmark results",
        "",
        "Written by `nox -s bench` (`python benchmarks/run_all.py`); each section is one",
        "script's output, where every figure is printed next to its target. Timings depend on",
        "the machine and its load: compare ratios measured in the same run.",
        "",
        f"- machine: {machine()}",
        f"- written: {time.strftime('%Y-%m-%d %H:%M')}",
        f"- versions: {', '.join(versions())}",
        f"- non-zero exit status (a failure, or a missed target where the script reports it "
        f"so; read each section for its verdicts): {', '.join(marked) or 'none'}",
        "",
    ]
    body = "\n".join(sections[n] for n in sorted(sections))
    results.write_text("\n".join(header) + "\n" + body, encoding="utf-8")
    print(f"wrote {results}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
