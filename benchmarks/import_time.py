"""How much ``import rlblocks.core`` adds on top of ``import torch, tensordict``.

    python benchmarks/import_time.py [--repeat 7]

Each measurement is a fresh interpreter; the figure is the median over ``--repeat`` runs of
(time to import torch, tensordict and rlblocks.core) minus (time to import torch and
tensordict), measured in the same run. Target: <= 0.15 s on the reference machine
(2 cores, CPU).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

TARGET_S = 0.15
BASE = "import torch, tensordict, tensordict.nn"
TIMER = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"


def time_import(stmt: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", TIMER.format(stmt=stmt)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per figure")
    args = parser.parse_args()
    time_import(BASE)  # warm the OS file cache so the first sample is not an outlier
    base, full = [], []
    for _ in range(args.repeat):  # interleave so drifts in machine load hit both alike
        base.append(time_import(BASE))
        full.append(time_import(f"{BASE}; import rlblocks.core"))
    added = statistics.median(f - b for f, b in zip(full, base))
    print(f"import torch, tensordict:                 {statistics.median(base):.3f} s")
    print(f"import torch, tensordict, rlblocks.core:  {statistics.median(full):.3f} s")
    print(
        f"rlblocks.core adds {added:.3f} s (target <= {TARGET_S:.2f} s): "
        f"{'met' if added <= TARGET_S else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
