"""AudioSet tags per file from a fine-tuned BEATs checkpoint, stored as index metadata.

Tagging is a pass of its own over an index's files, so any index, whatever encoder
built it, can carry tags that ``--where`` filters and ``retrieve eval`` can use
(``audioset_tags LIKE '%Dog%'``). A file's class probabilities are the maximum over its
10 s windows (a class counts as present if it is present anywhere in the file), and
the ``top`` classes are stored ``;``-separated, best first, the multi-label format the
rest of the engine reads, beside the best class's probability.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from retrieval import progress
from retrieval.audio.decode import stream
from retrieval.audio.paths import real_path
from retrieval.audio.windows import cut_stream, to_samples
from retrieval.encoders.base import EncoderOptions
from retrieval.errors import AudioError, InputError
from retrieval.options import LABEL_SEP
from retrieval.store import Store

#: BEATs was fine-tuned on 10 s AudioSet clips.
TAG_WINDOW_S = 10.0


def read_ontology(path: Path) -> dict[str, str]:
    """AudioSet ``class_labels_indices.csv`` (``index,mid,display_name``) as ``mid -> display_name``."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"mid", "display_name"} <= set(rows[0]):
        raise InputError(f"{path} needs 'mid' and 'display_name' columns (AudioSet class_labels_indices.csv)")
    return {r["mid"]: r["display_name"] for r in rows}


def tag_files(store: Store, model: str, *, top: int = 5, column: str = "audioset_tags",
              ontology: Path | None = None, device: str = "cpu",
              on_warning: Callable[[str], None] | None = None) -> int:
    """Tag every file of an index with its ``top`` AudioSet classes; returns files tagged.

    Args:
        store: an index opened for writing.
        model: a fine-tuned BEATs ``.pt`` checkpoint (``finetuned_model=True``).
        top: classes kept per file.
        column: metadata column for the tags; ``<column>_score`` gets the best probability.
        ontology: optional ``class_labels_indices.csv`` to store names instead of AudioSet ids.

    Raises:
        InputError: ``top < 1``, or a checkpoint that is not fine-tuned.
    """
    from retrieval.encoders.beats import BeatsEncoder

    if top < 1:
        raise InputError(f"top must be at least 1; got {top}")
    encoder = BeatsEncoder(EncoderOptions(model=model, device=device))
    names = _class_names(encoder, read_ontology(ontology) if ontology else None)
    window = to_samples(TAG_WINDOW_S, encoder.sample_rate)
    paths, tags, scores = [], [], []
    for root, rel in progress.bar(store.db.file_locations("status = 'ok'"), desc="tagging", unit="file"):
        try:
            probs = _file_probabilities(encoder, real_path(root, rel), window)
        except AudioError as exc:
            if on_warning:
                on_warning(f"not tagged {rel}: {exc}")
            continue
        best = np.argsort(-probs, kind="stable")[:top]
        paths.append(rel)
        tags.append(LABEL_SEP.join(names[i] for i in best))  # multi-label, as eval and --where read it
        scores.append(float(probs[best[0]]))
    table = pa.table({"path": pa.array(paths, pa.string()), column: pa.array(tags, pa.string()),
                      f"{column}_score": pa.array(scores, pa.float64())})
    with store.db.transaction():
        store.db.attach_metadata(table)
    return len(paths)


def _file_probabilities(encoder, path: Path, window: int) -> np.ndarray:
    """``(C,)`` max over the file's 10 s windows of the class probabilities."""
    best: np.ndarray | None = None
    for w in cut_stream(stream(path, encoder.sample_rate), window, window):
        p = encoder.class_probabilities(w.audio[None], np.array([len(w.audio)]))[0]
        best = p if best is None else np.maximum(best, p)
    if best is None:
        raise AudioError(f"{path.name} holds no audio samples")
    return best


def _class_names(encoder, ontology: dict[str, str] | None) -> list[str]:
    labels = encoder.labels  # AudioSet ids from the checkpoint's label_dict, or None
    ids = [str(x) for x in labels] if labels else [str(i) for i in range(encoder.config.predictor_class)]
    return [ontology.get(x, x) for x in ids] if ontology else ids
