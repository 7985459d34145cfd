"""Assemble docs/benchmarks.md from the fragments the bench scripts write (docs/bench_*.md).

Each ``scripts/bench_<name>.py`` prints its table and writes ``docs/bench_<name>.md``; this
script puts them in one document, in the order below, with the machine they ran on.
Run it after any benchmark: ``python scripts/collect_benchmarks.py``.
"""

from __future__ import annotations

import platform
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
ORDER = ["baseline", "startup", "ingest", "ray", "search", "serve", "serve_labels", "locate", "copies", "adapt", "clap", "wav2vec2", "beats"]


def main() -> None:
    fragments = sorted(DOCS.glob("bench_*.md"), key=lambda p: (
        ORDER.index(p.stem[6:]) if p.stem[6:] in ORDER else len(ORDER), p.stem))
    parts = [
        "# Benchmarks\n",
        "Every figure below was produced by the script named in its section, on the machine it",
        "names (the project's CI machine: a 2-core x86_64 CPU with 24 GiB, no GPU, shared with",
        "other work, so speeds are always reported as ratios measured within one run).",
        f"Collected on {platform.platform()} with Python {platform.python_version()}.\n",
        "| section | script |", "|---|---|",
    ]
    parts += [f"| [{p.stem[6:]}](#{p.stem[6:]}) | `scripts/{p.stem}.py` |" for p in fragments]
    for p in fragments:
        body = p.read_text().strip().splitlines()
        fence = False
        demoted = []
        for line in body:  # every heading one level down, so each fragment is one section
            fence ^= line.startswith("```")
            demoted.append("#" + line if line.startswith("#") and not fence else line)
        parts += ["", f'<a id="{p.stem[6:]}"></a>', "", *demoted]
    (DOCS / "benchmarks.md").write_text("\n".join(parts) + "\n")
    print(f"wrote {DOCS / 'benchmarks.md'} from {len(fragments)} fragments")


if __name__ == "__main__":
    main()
