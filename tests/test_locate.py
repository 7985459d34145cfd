"""``locate``: seeded long files with sounds planted at known times -> events at those times, within one hop."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from retrieval import Index, synth
from retrieval.audio.windows import plan_windows
from retrieval.cli import cli
from retrieval.configure import Choices
from retrieval.encoders import build
from retrieval.errors import EncoderError, InputError
from retrieval.ingest import ingest
from retrieval.locate import LocateOptions, Scan, locate, locate_curve, locate_curve_with_index
from retrieval.locate.api import COLUMNS
from retrieval.locate.curve import window_vectors
from tests.conftest import write

SR = 16000


def long_file(path, duration_s, sample_rate, plant, seed=0):
    """Noise plus seeded distractor sounds, with ``plant`` = [(onset_s, clip at ``sample_rate``)] added on top.

    Distractors (tones, other chirps, vowels) are placed away from the planted clips.
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sample_rate))
    x = synth.noise(duration_s, sample_rate, seed=seed, amplitude=0.03)[:n]
    busy = [(int(t * sample_rate) - sample_rate // 2, int(t * sample_rate) + len(c) + sample_rate // 2)
            for t, c in plant]
    pos = int(0.3 * sample_rate)
    while pos < n:
        kind = rng.integers(3)
        dur = float(rng.uniform(0.3, 0.9))
        d = (synth.sine(rng.uniform(200, 3000), dur, sample_rate, 0.3) if kind == 0 else
             synth.chirp(rng.uniform(2000, 4000), rng.uniform(100, 500), dur, sample_rate, 0.3) if kind == 1 else
             synth.vowel(rng.uniform(90, 200), (rng.uniform(300, 800), rng.uniform(1000, 2000)), dur, sample_rate))
        if not any(pos < b and pos + len(d) > a for a, b in busy) and pos + len(d) <= n:
            x[pos:pos + len(d)] += d
        pos += len(d) + int(rng.uniform(0.2, 0.8) * sample_rate)
    for t, c in plant:
        a = int(round(t * sample_rate))
        x[a:a + len(c)] += c[: n - a]
    return write(path, x, sample_rate)


def assert_found(events, truth, clip_s, hop_s):
    assert len(events) == len(truth), events
    np.testing.assert_allclose(events.start_s, truth, atol=hop_s)
    np.testing.assert_allclose(events.end_s, np.asarray(truth) + clip_s, atol=hop_s)


def test_a_planted_chirp_is_found_within_one_hop(tmp_path):
    clip = synth.chirp(600, 2400, 0.6, 22050)
    truth = [3.217, 14.5, 25.031]
    path = long_file(tmp_path / "long.wav", 30.37, 22050, [(t, clip) for t in truth])  # odd length, resampled
    events = locate(write(tmp_path / "q.wav", clip, 22050), path)
    assert list(events.columns) == list(COLUMNS)
    assert events.attrs["window_s"] == pytest.approx(0.6) and events.attrs["hop_s"] == pytest.approx(0.075)
    assert_found(events, truth, 0.6, events.attrs["hop_s"])
    assert (events.peak_score > events.attrs["threshold"]).all()
    assert (events.peak_score >= events.mean_score).all()
    peak_in = (events.peak_s >= events.start_s) & (events.peak_s <= events.end_s)
    assert peak_in.all()


def test_planted_clicks_are_found_within_one_hop(tmp_path):
    # The query is one occurrence cut from the recording, noise and all: logmel summarises a clean click train's
    # digital silence between clicks very differently from the noise between the planted copies' clicks. Clicks
    # every 40 ms, under the 62.5 ms hop: a train matches itself shifted by one period almost as well.
    clip = synth.clicks(25, 0.5, SR, seed=3)
    truth = [1.9, 9.333, 17.06]
    path = long_file(tmp_path / "long.wav", 20.0, SR, [(t, clip) for t in truth], seed=1)
    events = locate(path, path, start_s=1.9, end_s=2.4)
    assert_found(events, truth, 0.5, events.attrs["hop_s"])


def test_events_at_the_edges_start_at_0_and_end_at_the_end(tmp_path):
    clip = synth.chirp(500, 3000, 0.5, SR)
    path = long_file(tmp_path / "long.wav", 12.0, SR, [(0.0, clip), (11.5, clip)], seed=2)
    events = locate(clip, path, sample_rate=SR)
    assert len(events) == 2
    assert events.start_s.iloc[0] == 0.0 and events.end_s.iloc[-1] == pytest.approx(12.0, abs=1 / SR)


def test_a_clip_longer_than_the_window_is_its_pooled_windows(tmp_path):
    # A steady sound: every 0.5 s window of it resembles the mean of its windows; with near_peak=0.9 the event
    # spans all of it, by default it is the best of those windows.
    clip = synth.vowel(150, (700, 1100), 1.5, SR)
    path = long_file(tmp_path / "long.wav", 20.0, SR, [(6.25, clip)], seed=4)
    events = locate(clip, path, sample_rate=SR, window_s=0.5, hop_s=0.125, near_peak=0.9)
    assert events.attrs["window_s"] == 0.5
    assert_found(events, [6.25], 1.5, 0.125)
    best = locate(clip, path, sample_rate=SR, window_s=0.5, hop_s=0.125)
    assert len(best) == 1 and best.duration_s[0] == 0.5 and 6.25 <= best.start_s[0] <= 7.25


def test_the_long_file_is_streamed_in_the_windows_ingest_would_cut(tmp_path):
    path = write(tmp_path / "odd.wav", synth.noise(7.3331, SR, seed=5), SR)
    enc = build("logmel")
    windows, vectors, n = window_vectors(Scan(enc, 8000, 3000, "mean"), path)
    np.testing.assert_array_equal(windows, plan_windows(n, 8000, 3000))
    assert n == round(7.3331 * SR) and vectors.shape == (len(windows), enc.dim)
    short = locate_curve(synth.sine(440, 1.0, SR), write(tmp_path / "s.wav", synth.sine(440, 0.4, SR), SR),
                         sample_rate=SR)
    assert short.curve.windows.tolist() == [[0, 6400]]  # a file shorter than the window is one window


def test_bad_queries_are_typed_errors():
    with pytest.raises(InputError, match="exactly one query"):
        locate(None, "x.wav")
    with pytest.raises(InputError, match="exactly one query"):
        locate(np.zeros(10), "x.wav", text="dog")
    with pytest.raises(InputError, match="sample_rate"):
        locate(np.zeros(1600, np.float32), "x.wav")
    with pytest.raises(EncoderError, match="no text tower.*clap"):
        locate(None, "x.wav", text="a dog barking")  # refused before the long file is read
    with pytest.raises(InputError, match="window_s"):
        locate(np.ones(1600, np.float32), "x.wav", sample_rate=SR, window_s=-1.0)


# -- with an index: fine windows and the index's recipe ------------------------------------------


@pytest.fixture
def fine_index(tmp_path):
    """A pooling=none index with 1 s windows every 0.5 s over a corpus holding the long file."""
    event = synth.chirp(500, 4000, 1.0, SR)
    corpus = tmp_path / "corpus"
    long_file(corpus / "long.wav", 16.0, SR, [(7.0, event), (12.5, event)], seed=6)
    write(corpus / "other.wav", synth.vowel(120, (700, 1200), 3.0, SR), SR)
    ingest(corpus, tmp_path / "ix", Choices(pooling="none", window_s=1.0, hop_s=0.5))
    return corpus, tmp_path / "ix", write(tmp_path / "event.wav", event, SR)


def test_windows_of_a_fine_index_are_timestamped_results(fine_index):
    corpus, ix, event = fine_index
    out = CliRunner().invoke(cli, ["query", str(event), "--index", str(ix), "--windows", "-k", "2", "--json"])
    hits = json.loads(out.stdout)
    assert out.exit_code == 0 and [h["path"] for h in hits] == ["long.wav", "long.wav"]
    assert sorted((h["start_s"], h["end_s"]) for h in hits) == [(7.0, 8.0), (12.5, 13.5)]


def test_index_locate_uses_the_recipe_and_matches_search_scores(fine_index):
    corpus, ix, event = fine_index
    with Index.open(ix) as idx:
        events = idx.locate(event, corpus / "long.wav")
        assert events.attrs["window_s"] == 1.0 and events.attrs["hop_s"] == 0.5
        assert_found(events, [7.0, 12.5], 1.0, 0.5)
        # Without the per-file standardisation, a window's score is exactly its search score.
        raw = locate_curve_with_index(idx, event, corpus / "long.wav", standardize=False).curve
        hits = idx.search(event, k=5, windows=True)
    by_start = dict(zip(raw.windows[:, 0] / SR, raw.scores))
    for h in hits.itertuples():
        if h.path == "long.wav":
            assert by_start[h.start_s] == pytest.approx(h.score, abs=1e-5)


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_locate_json_and_plot(tmp_path):
    clip = synth.chirp(700, 2000, 0.5, SR)
    path = long_file(tmp_path / "long.wav", 10.0, SR, [(4.2, clip)], seed=7)
    q = write(tmp_path / "q.wav", clip, SR)
    out = CliRunner().invoke(cli, ["locate", str(q), str(path), "--json", "--plot", str(tmp_path / "c.png")])
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert {"threshold", "background", "window_s", "hop_s", "duration_s", "events", "plot"} <= set(got)
    assert len(got["events"]) == 1 and abs(got["events"][0]["start_s"] - 4.2) <= got["hop_s"]
    assert set(got["events"][0]) == set(COLUMNS)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = CliRunner().invoke(cli, ["locate", str(q), str(path), "--threshold", "0.99", "--max-gap-s", "0",
                                     "--min-dur-s", "0.1"])
    assert table.exit_code == 0 and table.output.startswith("0 event(s)")


def test_cli_locate_usage_errors(tmp_path):
    q = write(tmp_path / "q.wav", synth.sine(440, 0.5, SR), SR)
    run = CliRunner().invoke
    assert run(cli, ["locate", str(q)]).exit_code == 2  # one path and no --text
    assert run(cli, ["locate", str(q), str(q), "--text", "a beep"]).exit_code == 2
    out = run(cli, ["locate", str(q), str(q), "--index", str(tmp_path), "--pooling", "max"])
    assert out.exit_code == 2 and "--index" in out.output
    out = run(cli, ["locate", "--text", "a beep", str(q)])
    assert out.exit_code == 1 and "no text tower" in out.output


# -- text queries ---------------------------------------------------------------------------------


def test_a_text_query_scores_each_window_by_its_cosine_to_the_text(tmp_path):
    from retrieval.embed import embed_windows
    from retrieval.postprocess import l2_normalize
    from tests.encoders._clap_models import build_tiny_clap

    model = build_tiny_clap(tmp_path / "clap")
    path = write(tmp_path / "long.wav", np.concatenate([synth.noise(1.0, 48000, seed=1),
                                                       synth.chirp(500, 4000, 1.0, 48000)]), 48000)
    enc = build("clap", model=str(model))
    got = locate_curve(None, path, encoder=enc, text="a rising chirp", window_s=1.0, hop_s=1.0, standardize=False)
    curve = got.curve
    assert curve.windows.tolist() == [[0, 48000], [48000, 96000]]
    audio = sf.read(path, dtype="float32")[0]
    vecs, _ = embed_windows(enc, [audio[a:b] for a, b in curve.windows], enc.default_pooling)
    text = l2_normalize(enc.text_embeddings(["a rising chirp"]))[0]
    np.testing.assert_allclose(curve.scores, l2_normalize(vecs) @ text, atol=1e-5)
    assert got.events.attrs["encoder"] == "clap" and len(got.events) >= 1


# -- LocateOptions: one value for every locate function -------------------------------------


def test_options_object_and_keywords_are_the_same_call(tmp_path):
    clip = synth.chirp(600, 2400, 0.5, SR)
    path = long_file(tmp_path / "long.wav", 8.0, SR, [(3.0, clip)], seed=3)
    how = LocateOptions(sample_rate=SR, window_s=0.5, hop_s=0.125, near_peak=0.9)
    by_object = locate(clip, path, how)
    by_keywords = locate(clip, path, sample_rate=SR, window_s=0.5, hop_s=0.125, near_peak=0.9)
    pd.testing.assert_frame_equal(by_object, by_keywords)
    changed = locate(clip, path, how, near_peak=1.0)  # keywords change fields of the object
    pd.testing.assert_frame_equal(changed, locate(clip, path, sample_rate=SR, window_s=0.5, hop_s=0.125))
    assert how.near_peak == 0.9  # the object itself is left as it was


def test_options_are_checked_when_built():
    with pytest.raises(InputError, match="hop_s must be a positive"):
        LocateOptions(hop_s=0)
    with pytest.raises(InputError, match="min_dur_s must be a number of seconds >= 0"):
        LocateOptions(min_dur_s=-0.1)
    with pytest.raises(InputError, match="batch_size"):
        LocateOptions(batch_size=0)
    with pytest.raises(InputError, match="unknown locate option.*windw_s; valid: .*window_s"):
        locate(np.ones(1600, np.float32), "x.wav", sample_rate=SR, windw_s=1.0)
    with pytest.raises(TypeError, match="encoder_options"):
        locate(np.ones(1600, np.float32), "x.wav", {"n_mels": 64})  # the old encoder-settings dict


def test_locate_with_index_takes_what_it_needs_from_any_index_view(fine_index):
    """``locate_curve_with_index`` reads ``recipe``, ``encoder`` and ``transform`` only (the IndexView
    protocol), so anything that has them works, and it never imports ``Index``."""
    corpus, ix, event = fine_index
    with Index.open(ix) as idx:
        real = locate_curve_with_index(idx, event, corpus / "long.wav", standardize=False)
        view = SimpleNamespace(recipe=idx.recipe, encoder=idx.encoder, transform=idx.transform)
        fake = locate_curve_with_index(view, event, corpus / "long.wav", LocateOptions(standardize=False))
        with pytest.raises(InputError, match="pooling come.*from the index's recipe"):
            idx.locate(event, corpus / "long.wav", pooling="max")
    np.testing.assert_array_equal(real.curve.scores, fake.curve.scores)
    pd.testing.assert_frame_equal(real.events, fake.events)
