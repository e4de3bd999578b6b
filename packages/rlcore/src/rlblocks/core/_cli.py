"""The ``rlblocks`` console command."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from rlblocks.core._plugins import (
    active_segment_tree_provider,
    list_components,
    plugin_failures,
)
from rlblocks.core.errors import PluginLoadWarning, RLBlocksError


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


def _plugins_command(_: argparse.Namespace) -> int:
    # Failures are printed below as a section of their own, not as Python warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        try:
            components = list_components()
        except RLBlocksError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        failures = plugin_failures()
    header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "PLUGIN")
    rows = [header] + [(c.kind, c.name, c.distribution, c.version, c.plugin) for c in components]
    print(_table(rows))
    if any(c.kind == "segment_tree" for c in components):
        print(f"\nsegment tree in use: {active_segment_tree_provider()}")
    if failures:
        print(f"\n{len(failures)} plugin(s) failed to load and were skipped:")
        for f in failures:
            print(f"  {f.plugin} ({f.distribution} {f.version}): {f.error}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlblocks`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="rlblocks", description="rlblocks command-line tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plugins = commands.add_parser(
        "plugins", help="list every installed component with its kind, name and distribution"
    )
    plugins.set_defaults(run=_plugins_command)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
