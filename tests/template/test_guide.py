"""docs/plugins.md walks through the template's code: its excerpts must be the real code,
and its usage example must run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "plugins.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", GUIDE, flags=re.DOTALL)
EXCERPTS = [
    (match.group(1), body[match.end() :])
    for _, body in BLOCKS
    if (match := re.match(r"# file: (\S+)\n", body))
]


def test_the_guide_quotes_every_template_module():
    quoted = {path for path, _ in EXCERPTS}
    assert {
        "plugins/rltemplate/pyproject.toml",
        "plugins/rltemplate/src/rlblocks/template/_plugin.py",
        "plugins/rltemplate/src/rlblocks/template/_env.py",
        "plugins/rltemplate/src/rlblocks/template/_loss.py",
        "plugins/rltemplate/src/rlblocks/template/_sampler.py",
    } <= quoted


@pytest.mark.parametrize(
    ("path", "excerpt"), EXCERPTS, ids=[f"{p}#{i}" for i, (p, _) in enumerate(EXCERPTS)]
)
def test_excerpts_are_verbatim(path, excerpt):
    source = (ROOT / path).read_text()
    assert excerpt in source, f"docs/plugins.md quotes {path}, but the code has changed"


def test_the_usage_example_runs():
    (example,) = [body for lang, body in BLOCKS if lang == "python" and "for _ in" in body]
    namespace: dict = {}
    exec(compile(example, "docs/plugins.md", "exec"), namespace)
    assert len(namespace["rb"]) == 10_000
