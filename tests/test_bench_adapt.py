"""``scripts/bench_adapt.py --sections scale`` rewrites only its own section of the report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_adapt.py"


def _splice():
    spec = importlib.util.spec_from_file_location("bench_adapt", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.splice


def test_splice_replaces_old_sections_in_place_and_keeps_the_others() -> None:
    old = "\n".join(["# Report", "intro", "## Few-shot", "a", "```", "## not a heading", "```",
                     "## Re-scoring at scale (old)", "x", "## One label-train-score-suggest round on 1", "y",
                     "## Later", "z", "Load average at the end: 3.0."])
    new = ["## Scale", "fresh"]
    out = _splice()(old, new, ("## Scale", "## Re-scoring at scale", "## One label-train-score-suggest round on"))
    assert out.splitlines() == ["# Report", "intro", "## Few-shot", "a", "```", "## not a heading", "```",
                                "## Scale", "fresh", "## Later", "z"]
    # a second run replaces its own section rather than adding another
    again = _splice()(out, ["## Scale", "newer"], ("## Scale",))
    assert again.count("## Scale") == 1 and "newer" in again and "fresh" not in again


def test_splice_appends_when_the_report_has_no_such_section() -> None:
    out = _splice()("# Report\n## Other\nq\n", ["## Scale", "s"], ("## Scale",))
    assert out.splitlines() == ["# Report", "## Other", "q", "", "## Scale", "s"]
