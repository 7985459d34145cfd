"""The agile loop: window labels (kept by content), heads, window scores, suggestions, --rank-by."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from retrieval.adapt import Adapter, farthest_points, parse_ranks, pick_windows
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.errors import InputError
from retrieval.heads import balanced_weights, fit_head
from retrieval.index import Index
from retrieval.ingest import IngestOptions, ingest
from retrieval.store.labels import label_value


def _index(corpus, ix):
    ingest([corpus], ix, Choices(), IngestOptions(commit_every=4))
    return ix


def _label_class(ad: Adapter, corpus, cls: str, target: str, n_pos: int = 2, n_neg: int = 2) -> None:
    pos = sorted(p.relative_to(corpus).as_posix() for p in (corpus / cls).glob("*.wav"))[:n_pos]
    others = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*.wav") if p.parent.name != cls)
    rows = [{"path": p, "target": target, "label": "positive"} for p in pos]
    rows += [{"path": p, "target": target, "label": "negative"} for p in others[::max(1, len(others) // n_neg)][:n_neg]]
    ad.add_labels(pd.DataFrame(rows))


# -- heads on arrays -----------------------------------------------------------------------


def _mixture(n: int = 400, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    x = rng.standard_normal((n, d)).astype(np.float32) + np.where(y[:, None], 1.5, -1.5) * np.eye(d)[0]
    return x.astype(np.float32), y


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_separates_a_gaussian_mixture_and_is_deterministic(kind):
    x, y = _mixture()
    head = fit_head(x, y, kind=kind, seed=3)
    # close to the Bayes-optimal score (the first coordinate) on this mixture
    assert roc_auc_score(y, head.scores(x)) > roc_auc_score(y, x[:, 0]) - 0.02
    again = fit_head(x, y, kind=kind, seed=3)
    np.testing.assert_array_equal(head.scores(x), again.scores(x))
    assert head.scores(x).dtype == np.float32 and head.scores(x).min() >= 0 and head.scores(x).max() <= 1


def test_balanced_weights_equal_totals_and_keep_ratios():
    y = np.array([1, 0, 0, 0, 0], bool)
    w = balanced_weights(y, np.array([1.0, 1.0, 0.1, 0.1, 0.1]))
    assert w[y].sum() == pytest.approx(w[~y].sum())
    assert w[1] / w[2] == pytest.approx(10.0)


def test_head_needs_both_classes_and_a_known_kind():
    x, y = _mixture()
    with pytest.raises(InputError, match="positive and negative"):
        fit_head(x, np.ones(len(x), bool))
    with pytest.raises(InputError, match="linear, mlp"):
        fit_head(x, y, kind="forest")  # type: ignore[arg-type]


def test_parse_ranks_and_label_values():
    assert parse_ranks("1-3,7, 2") == [1, 2, 3, 7]
    for bad in ("0", "3-1", "a"):
        with pytest.raises(InputError):
            parse_ranks(bad)
    assert label_value("POS") == "positive" and label_value(0) == "negative" and label_value("?") == "uncertain"
    with pytest.raises(InputError, match="positive, negative, uncertain"):
        label_value("maybe")


# -- the loop on an index ------------------------------------------------------------------


def test_label_train_score_suggest(corpus, tmp_path):
    ix = _index(corpus, tmp_path / "ix")
    with Index.open(ix, writable=True) as idx:
        ad = idx.adapter()
        _label_class(ad, corpus, "tone", "tone")
        summary = ad.train(["tone"], weak_negatives=0.1)[0]
        assert summary["positives"] > 0 and summary["negatives"] > 0 and summary["weak_negatives"] > 0
        ad.score(["tone"])
    with Index.open(ix) as idx:
        # the files column is each file's best window score; tone files score above the rest
        files = idx.store.db.con.execute("SELECT path, score_tone FROM files").fetchall()
        truth = [p.startswith("tone/") for p, _ in files]
        assert roc_auc_score(truth, [s for _, s in files]) > 0.9
        best = idx.store.db.con.execute(
            "SELECT f.score_tone, max(x.score) FROM files f JOIN windows s USING (file_id) "
            "JOIN window_scores x USING (window_id) GROUP BY f.file_id, f.score_tone").fetchall()
        assert all(a == pytest.approx(b) for a, b in best)
        # score_tone is usable in --where
        hits = idx.search(corpus / "tone" / "tone_03.wav", k=20, where="score_tone > 0.5")
        assert len(hits) and (hits["score_tone"] > 0.5).all()
        ad = idx.adapter()
        labelled = set(ad.labels_db.window_labels(["tone"])["window_id"])
        margin = ad.suggest(["tone"], n=5)
        assert len(margin) == 5 and not labelled & set(margin["window_id"])
        assert margin["margin"].is_monotonic_increasing
        ids, scores = ad.window_scores("tone")
        free = ~np.isin(ids, list(labelled))
        assert margin["margin"].iloc[0] == pytest.approx(np.abs(scores[free] - 0.5).min())
        top = ad.suggest(["tone"], n=5, strategy="top")
        assert top["score_tone"].is_monotonic_decreasing
        assert top["score_tone"].iloc[0] == pytest.approx(scores[free].max())
        rand = ad.suggest(["tone"], n=5, strategy="random", seed=1)
        assert rand["window_id"].tolist() == ad.suggest(["tone"], n=5, strategy="random", seed=1)["window_id"].tolist()


def test_labels_survive_move_rename_and_reingest(corpus, tmp_path):
    ix = _index(corpus, tmp_path / "ix")
    with Index.open(ix, writable=True) as idx:
        ad = idx.adapter()
        ad.label("tone/tone_00.wav", "tone", "positive")            # will be renamed
        ad.label("chirp/chirp_01.wav", "tone", "negative", start_s=0.0, end_s=0.5)  # will move folders
        ad.label("noise/noise_02.wav", "tone", "negative")          # will be removed, then re-ingested
        before = ad.labels_db.window_labels(["tone"])
        n_before = before.groupby("label").size().to_dict()
        old_ids = set(before["window_id"])
    os.rename(corpus / "tone" / "tone_00.wav", corpus / "tone" / "renamed.wav")
    (corpus / "moved").mkdir()
    shutil.move(corpus / "chirp" / "chirp_01.wav", corpus / "moved" / "chirp_01.wav")
    shutil.move(corpus / "noise" / "noise_02.wav", tmp_path / "noise_02.wav")
    _index(corpus, ix)
    shutil.move(tmp_path / "noise_02.wav", corpus / "noise" / "noise_02.wav")
    _index(corpus, ix)
    with Index.open(ix) as idx:
        ad = idx.adapter()
        after = ad.labels_db.window_labels(["tone"])
        assert after.groupby("label").size().to_dict() == n_before
        paths = set(ad.labels()["path"])
        assert paths == {"tone/renamed.wav", "moved/chirp_01.wav", "noise/noise_02.wav"}
        # the re-ingested file has new window ids, and its labels found them
        assert set(after["window_id"]) - old_ids


def test_label_csv_partial_span_and_errors(corpus, tmp_path):
    ix = _index(corpus, tmp_path / "ix")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,start_s,end_s,target,label\ntone/tone_01.wav,0,0.3,tone,positive\n"
                   "chirp/chirp_00.wav,,,tone,neg\n")
    with Index.open(ix, writable=True) as idx:
        ad = idx.adapter()
        assert ad.label_csv(csv) == 2
        got = ad.labels(["tone"])
        assert sorted(got["label"]) == ["negative", "positive"] and got["source"].iloc[0] == "csv:labels.csv"
        spans = ad.labels_db.window_spans(ad.labels_db.window_labels(["tone"])["window_id"].tolist())
        part = spans[spans["path"] == "tone/tone_01.wav"]
        sr = idx.recipe.sample_rate
        # a short event labels the windows holding at least half of it, and no others
        cut = int(0.3 * sr)
        overlap = np.minimum(part.end_sample, cut) - np.maximum(part.start_sample, 0)
        assert len(part) and (2 * overlap >= np.minimum(part.end_sample - part.start_sample, cut)).all()
        bad = tmp_path / "bad.csv"
        bad.write_text("path,start_s,end_s,target,label\nnope.wav,,,tone,positive\ntone/tone_01.wav,,,tone,pos\n")
        with pytest.raises(InputError, match="not in the index.*nope.wav"):
            ad.label_csv(bad)
        assert len(ad.labels()) == 2  # nothing of the bad file was written
        with pytest.raises(InputError, match="letters, digits or underscores"):
            ad.label("tone/tone_01.wav", "car horn", "positive")
        with pytest.raises(InputError, match="end_s must be after start_s"):
            ad.label("tone/tone_01.wav", "tone", "positive", start_s=1.0, end_s=0.5)


def test_head_of_another_recipe_and_stale_scores_are_refused(corpus, tmp_path):
    ix = _index(corpus, tmp_path / "ix")
    with Index.open(ix, writable=True) as idx:
        ad = idx.adapter()
        _label_class(ad, corpus, "noise", "noise")
        ad.train(["noise"])
        with pytest.raises(InputError, match="retrieve score --target noise"):
            ad.suggest(["noise"])
        ad.score(["noise"])
        assert len(ad.suggest(["noise"], n=3)) == 3
        ad.train(["noise"], head="mlp")
        with pytest.raises(InputError, match="older head"):
            ad.suggest(["noise"])
        kind, _, summary, params, _ = ad.labels_db.head("noise")
        with idx.store.db.transaction():
            ad.labels_db.save_head("noise", kind, "0123abcd", summary, params)
        with pytest.raises(InputError, match="recipe 0123abcd.*retrain"):
            ad.score(["noise"])
        with pytest.raises(InputError, match="no positive window"):
            ad.train(["vowel"])


def test_cli_loop_from_query_to_rank_by(corpus, tmp_path):
    ix = str(_index(corpus, tmp_path / "ix"))
    run = CliRunner().invoke
    clip = str(corpus / "vowel" / "vowel_00.wav")
    r = run(cli, ["label", "--index", ix, "--from-query", clip, "--target", "vowel", "--positive", "1-3",
                  "--negative", "6,7", "-k", "8", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["labels"] == 5
    r = run(cli, ["labels", "--index", ix, "--counts", "--json"])
    assert {(x["label"], x["count"]) for x in json.loads(r.output)} == {("positive", 3), ("negative", 2)}
    r = run(cli, ["train", "--index", ix, "--target", "vowel", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["positives"] == 3
    r = run(cli, ["score", "--index", ix, "--target", "vowel", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["column"] == "score_vowel"
    r = run(cli, ["suggest", "--index", ix, "--target", "vowel", "-n", "4", "--json"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.output)) == 4
    r = run(cli, ["query", clip, "--index", ix, "-k", "5", "--rank-by", "score_vowel", "--json"])
    assert r.exit_code == 0, r.output
    ranked = [h["score_vowel"] for h in json.loads(r.output)]
    assert ranked == sorted(ranked, reverse=True) and len(ranked) == 5
    r = run(cli, ["query", clip, "--index", ix, "-k", "5", "--windows", "--rank-by", "score_vowel", "--json"])
    hits = json.loads(r.output)
    with Index.open(ix) as idx:
        ids, scores = idx.adapter().labels_db.scores("vowel")
    by_id = dict(zip(ids.tolist(), scores.tolist()))
    assert [h["score_vowel"] for h in hits] == pytest.approx([by_id[h["window_id"]] for h in hits])
    r = run(cli, ["query", clip, "--index", ix, "--where", "score_vowel >= 0.5", "--json"])
    assert r.exit_code == 0 and all(h["score_vowel"] >= 0.5 for h in json.loads(r.output))
    r = run(cli, ["query", clip, "--index", ix, "--rank-by", "score_nothing"])
    assert r.exit_code == 1 and "cannot rank by 'score_nothing'" in r.output
    r = run(cli, ["label", "--index", ix, "--from-query", clip, "--target", "vowel", "--positive", "99"])
    assert r.exit_code == 1 and "past the" in r.output


def test_locate_target_finds_the_targets_stretch(corpus, tmp_path):
    from retrieval import synth
    from tests.conftest import write

    ix = _index(corpus, tmp_path / "ix")
    with Index.open(ix, writable=True) as idx:
        ad = idx.adapter()
        _label_class(ad, corpus, "tone", "tone", n_pos=4, n_neg=16)
        ad.train(["tone"], weak_negatives=0)
    sr = 16000
    tone = np.concatenate([synth.demo_clip("tone", i, sr) for i in range(20, 32)])[: 12 * sr]
    long = np.concatenate([synth.noise(12.0, sr, seed=5), tone, synth.noise(12.0, sr, seed=6)])
    path = write(tmp_path / "long.wav", long, sr)
    r = CliRunner().invoke(cli, ["locate", str(path), "--index", str(ix), "--target", "tone", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["query"] == "target:tone" and doc["threshold"] == 0.5
    events = doc["events"]
    assert events, doc
    best = max(events, key=lambda e: e["peak_score"])
    assert 10.0 <= best["peak_s"] <= 26.0 and best["peak_score"] > 0.5
    assert all(e["end_s"] > 10.0 and e["start_s"] < 26.0 for e in events), events  # nothing in the noise alone
    r = CliRunner().invoke(cli, ["locate", str(path), "--index", str(ix), "--target", "nothing"])
    assert r.exit_code == 1 and "no head for target 'nothing'" in r.output
    r = CliRunner().invoke(cli, ["locate", str(path), "--target", "tone"])
    assert r.exit_code == 2 and "--target needs --index" in r.output


# -- margin sampling with a diversity step -------------------------------------------------


def test_farthest_points_spreads_over_clusters():
    rng = np.random.default_rng(3)
    centres = np.eye(4, 16, dtype=np.float32)
    x = np.repeat(centres, 5, axis=0) + 0.01 * rng.standard_normal((20, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    chosen = farthest_points(x, 4)
    assert chosen[0] == 0 and len(set(chosen.tolist())) == 4
    assert sorted(c // 5 for c in chosen) == [0, 1, 2, 3]  # one window per cluster
    assert len(farthest_points(x, 50)) == 20 and len(farthest_points(x[:0], 3)) == 0


def test_margin_shortlists_near_boundary_then_spreads_out():
    # 12 windows: 0-5 near-duplicates at the boundary, 6-8 a second spot a bit farther, 9-11 sure
    x = np.zeros((12, 8), np.float32)
    x[:6, 0] = 1
    x[6:9, 1] = 1
    x[9:, 2] = 1
    scores = np.array([0.50, 0.501, 0.502, 0.503, 0.504, 0.505, 0.52, 0.53, 0.54, 0.99, 0.01, 0.98],
                      np.float32)[:, None]
    cand = np.arange(12)
    plain = pick_windows(scores, cand, 2, "margin")
    assert plain.tolist() == [0, 1]  # without vectors: the two smallest margins, duplicates or not
    assert pick_windows(scores, cand, 2, "margin", vectors=x, margin_pool=1).tolist() == [0, 1]
    spread = pick_windows(scores, cand, 2, "margin", vectors=x, margin_pool=5)
    assert spread.tolist() == [0, 6]  # the smallest margin first, then the far window within the shortlist
    # the shortlist bounds it: with margin_pool=2 only rows 0-3 are eligible, all duplicates
    assert set(pick_windows(scores, cand, 2, "margin", vectors=x, margin_pool=2).tolist()) <= {0, 1, 2, 3}
    # only candidates are picked, best (smallest margin) first
    sub = pick_windows(scores, np.array([11, 7, 3, 10]), 3, "margin", vectors=x)
    assert set(sub.tolist()) <= {11, 7, 3, 10} and sub[0] == 3
    m = np.abs(scores[sub, 0] - 0.5)
    assert (np.diff(m) >= 0).all()
