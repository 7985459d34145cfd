"""Zero-shot scoring on hand-made vectors, with exact answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrieval.errors import InputError
from retrieval.zeroshot import (
    DEFAULT_LOGIT_SCALE,
    DEFAULT_TEMPLATES,
    class_vectors,
    ensemble,
    labels_in,
    prediction_table,
    prompts,
    zero_shot_classify,
    zero_shot_eval,
    zero_shot_scores,
)

LABELS = ["dog", "rain", "engine"]
E = np.eye(3, dtype=np.float32)


def test_prompts_are_label_major_and_checked() -> None:
    out = prompts(["dog", "cat"], ["{label}", "the sound of a {label}"])
    assert out == ["dog", "the sound of a dog", "cat", "the sound of a cat"]
    assert len(prompts(LABELS)) == len(LABELS) * len(DEFAULT_TEMPLATES)
    with pytest.raises(InputError, match="placeholder"):
        prompts(["dog"], ["a sound"])
    with pytest.raises(InputError, match="repeated"):
        prompts(["dog", "dog"])
    with pytest.raises(InputError, match="at least one label"):
        prompts([])


def test_ensemble_averages_unit_vectors_then_renormalises() -> None:
    # label 0: templates give e0 (length 5) and e1 (length 1): normalised first, so the mean is (e0 + e1) / 2
    text = np.array([[5, 0, 0], [0, 1, 0], [0, 0, 2], [0, 0, 3]], np.float32)
    out = ensemble(text, n_templates=2)
    np.testing.assert_allclose(out, [[2**-0.5, 2**-0.5, 0], [0, 0, 1]], atol=1e-7)
    with pytest.raises(InputError, match="K = 3"):
        ensemble(text, n_templates=3)


def test_class_vectors_call_the_text_encoder_once() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.stack([E[LABELS.index(next(lab for lab in LABELS if lab in t))] for t in texts])

    out = class_vectors(embed, LABELS, ["{label}", "a {label} sound"])
    assert len(calls) == 1 and len(calls[0]) == 6
    np.testing.assert_allclose(out, E, atol=1e-7)


def test_scores_are_cosines_and_softmax_with_the_scale() -> None:
    audio = np.array([[2, 0, 0], [1, 1, 0], [0, 0, -1]], np.float32)  # not unit: normalised inside
    s = zero_shot_scores(audio, E, logit_scale=10.0)
    expected = np.array([[1, 0, 0], [2**-0.5, 2**-0.5, 0], [0, 0, -1]])
    np.testing.assert_allclose(s.cosine, expected, atol=1e-6)
    logits = expected * 10.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(s.probs, probs, atol=1e-6)
    assert s.logit_scale == 10.0
    assert zero_shot_scores(audio, E).logit_scale == pytest.approx(DEFAULT_LOGIT_SCALE)
    assert zero_shot_scores(audio, E, temperature=0.5).logit_scale == 2.0
    with pytest.raises(InputError, match="not both"):
        zero_shot_scores(audio, E, logit_scale=1.0, temperature=1.0)
    with pytest.raises(InputError, match="positive"):
        zero_shot_scores(audio, E, temperature=0.0)
    with pytest.raises(InputError, match="same dim"):
        zero_shot_scores(audio, np.eye(4))


def test_classify_top1_and_topk() -> None:
    scores = np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.7]])
    assert zero_shot_classify(scores, LABELS) == ["rain", "engine"]
    assert zero_shot_classify(scores, LABELS, k=2) == [["rain", "engine"], ["engine", "dog"]]
    assert zero_shot_classify(zero_shot_scores(E, E), LABELS) == LABELS
    with pytest.raises(InputError, match=r"\[1, 3\]"):
        zero_shot_classify(scores, LABELS, k=4)


def test_eval_accuracy_and_class_map_exact() -> None:
    scores = np.array([
        [0.9, 0.1, 0.0],  # dog       -> dog (right)
        [0.2, 0.8, 0.1],  # rain;dog  -> rain (right: one of its labels)
        [0.6, 0.3, 0.5],  # engine    -> dog (wrong)
        [0.1, 0.2, 0.7],  # engine    -> engine (right)
    ])
    out = zero_shot_eval(scores, ["dog", "rain; dog", "engine", "engine"], LABELS)
    assert out["accuracy"] == 0.75 and out["n"] == 4 and out["classes"] == 3
    # dog: ranking 0.9(+), 0.6(-), 0.2(+), 0.1(-) -> AP = (1 + 2/3) / 2
    # rain: 0.8(+) first -> 1;  engine: 0.7(+), 0.5(+) -> 1
    assert out["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1 + 1) / 3)


def test_eval_refuses_unknown_or_missing_labels() -> None:
    scores = np.zeros((2, 3))
    with pytest.raises(InputError, match=r"\['cat'\] are not among"):
        zero_shot_eval(scores, ["dog", "cat"], LABELS)
    with pytest.raises(InputError, match="file 1 has no true label"):
        zero_shot_eval(scores, ["dog", " ; "], LABELS)
    with pytest.raises(InputError, match="2 files scored but 1"):
        zero_shot_eval(scores, ["dog"], LABELS)


def test_labels_in_a_column_are_split_sorted_and_required():
    truth = pd.Series(["dog;rain", " cat ", None, "dog", ";"], name="label")
    assert labels_in(truth, "label") == ["cat", "dog", "rain"]
    with pytest.raises(InputError, match="column 'tags' holds no labels; pass --labels"):
        labels_in(pd.Series([None, " ; "], name="tags"), "tags")


def test_prediction_table_names_the_best_class_and_scores_labelled_files():
    cosine = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    scores = zero_shot_scores(cosine, np.eye(2, dtype=np.float32), logit_scale=10.0)
    truth = pd.Series(["a", "a", None], name="kind")
    table, metrics = prediction_table(pd.Series(["x.wav", "y.wav", "z.wav"]), truth, ["a", "b"], scores,
                                      evaluate=True)
    assert table.columns.tolist() == ["path", "predicted", "probability", "kind", "p:a", "p:b"]
    assert table.predicted.tolist() == ["a", "b", "a"]
    np.testing.assert_allclose(table.probability, scores.probs.max(axis=1))
    assert metrics is not None and metrics["accuracy"] == pytest.approx(0.5)  # z.wav is unlabelled: left out
    assert prediction_table(table.path, truth, ["a", "b"], scores)[1] is None
