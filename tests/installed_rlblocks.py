"""Exit non-zero unless the installed rlblocks distributions are exactly those named.

Used by the ``standalone`` nox sessions: a package's tests must pass with only the
distributions it declares (test-fixture plugins aside).
"""

from __future__ import annotations

import importlib.metadata
import sys


def main(expected: list[str]) -> int:
    installed = {
        dist.metadata["Name"]
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"].startswith("rlblocks-")
        and not dist.metadata["Name"].startswith("rlblocks-testplugin-")
    }
    if installed != set(expected):
        print(f"expected rlblocks distributions {sorted(expected)}, found {sorted(installed)}")
        return 1
    print(f"installed rlblocks distributions: {sorted(installed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
