"""A one-off search answered from the index's lookup, without DuckDB (issue 16 item 9).

``retrieve query`` starts a fresh interpreter for a single search. Importing duckdb and
opening the database took about a third of its cold start, although a plain search needs
from the database only the recipe, the fitted post-processing and the rows of its ten hits.
The index's last clean writer leaves those as plain files (:mod:`retrieval.store.lookup`),
trusted while the summary's stamp holds (:func:`retrieval.store.summary.read_fresh`).

:func:`search_rows` returns None whenever it cannot answer exactly as
:meth:`retrieval.index.Index.search_rows` would: no fresh summary or lookup, a FAISS file
that does not match the lookup, or a vector id the lookup lacks. The caller then takes the
full path. Filters (``--where``) and re-ranking always take it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retrieval.audio.clip import clip_audio, silence_warning
from retrieval.configure import encoder_for
from retrieval.embed import embed_clip
from retrieval.errors import InputError
from retrieval.hits import hit_dicts, ranked_in
from retrieval.postprocess import Postprocess
from retrieval.recipe import Recipe
from retrieval.store import summary
from retrieval.store.lookup import Lookup
from retrieval.store.vectors import VectorIndex


def search_rows(root: Path, clip: str | Path, k: int, *, windows: bool = False, start_s: float | None = None,
                end_s: float | None = None, device: str = "cpu") -> tuple[list[dict[str, Any]], list[str]] | None:
    """``(rows, warnings)`` of a search by example of the index at ``root``, as
    :meth:`retrieval.index.Index.search_rows` gives them (no filter); None when the lookup
    cannot answer (the caller opens the index instead).

    Raises:
        InputError: ``k < 1``, or the clip cannot be decoded (as the full path would).
    """
    if k < 1:
        raise InputError(f"k must be at least 1; got {k}")
    found = _open(Path(root))
    if found is None:
        return None
    look, vi = found
    recipe = Recipe.from_json(look.meta["recipe"])
    encoder = encoder_for(recipe, device, index=root, corpus=look.meta.get("corpus_root"))
    audio = clip_audio(clip, recipe.sample_rate, start_s=start_s, end_s=end_s)
    raw, _, _ = embed_clip(encoder, audio, recipe.window_samples, recipe.hop_samples, recipe.pooling)
    vector = Postprocess(recipe.postprocess, look.postprocess_state()).apply(raw[None])[0]  # type: ignore[arg-type]
    warning = silence_warning(audio, recipe.window_samples, recipe.hop_samples, recipe.silence_db)
    try:
        ids, scores = ranked_in(vi, np.asarray(vector, np.float32), k, None, by_file=not windows,
                                file_of=look.files_of)
        rows = look.hit_rows(ids)
    except KeyError:  # the lookup and FAISS disagree after all: let the full path answer
        return None
    out = hit_dicts(rows, ids, scores, sample_rate=recipe.sample_rate, extra=list(look.meta["columns"]),
                    multi_root=len(look.meta.get("roots") or []) > 1)
    return out, [warning] if warning else []


def _open(root: Path) -> tuple[Lookup, VectorIndex] | None:
    """The lookup and window index of ``root`` when both belong to the stamped committed state."""
    if summary.read_fresh(root) is None:
        return None
    look = Lookup.open(root)
    if look is None:
        return None
    faiss_meta = look.meta.get("faiss") or {}
    vi = VectorIndex.load(root / str(faiss_meta.get("path", "windows.faiss")))
    if (vi is None or vi.generation != str(look.meta.get("generation")) or vi.ntotal != faiss_meta.get("ntotal")
            or vi.kind != faiss_meta.get("kind") or vi.stats.get("postprocess_fit") != look.meta.get("fit_digest")):
        return None
    return look, vi
