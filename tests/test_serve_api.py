"""`retrieve serve`'s JSON API through FastAPI's test client: shapes, audio, thumbnails, safety."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from retrieval.cli import cli  # noqa: E402
from retrieval.errors import InputError  # noqa: E402
from retrieval.index import Index  # noqa: E402
from retrieval.serve import check_bind, is_loopback  # noqa: E402
from retrieval.serve.app import Limits, create_app  # noqa: E402
from retrieval.serve.indexes import IndexSet  # noqa: E402
from tests.serve_fixtures import SR, build_index, long_audio  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_index(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def held(built: tuple[Path, Path]) -> IndexSet:
    s = IndexSet([built[1]])
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(held: IndexSet) -> TestClient:
    return TestClient(create_app(held))


def wav_bytes(audio: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def file_id(client: TestClient, rel: str) -> int:
    hits = client.post("/api/search", files={"file": ("q.wav", wav_bytes(long_audio("long_a")[: 4 * SR]))},
                       data={"k": 50}).json()
    return next(h["file_id"] for h in hits if h["path"] == rel)


def test_search_by_upload_answers_what_the_cli_prints(client: TestClient, built: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    corpus, ix = built
    clip = corpus / "chirp" / "chirp_01.wav"
    res = client.post("/api/search", files={"file": ("chirp_01.wav", clip.read_bytes(), "audio/wav")},
                      data={"k": 5})
    assert res.status_code == 200, res.text
    assert "app;dur=" in res.headers["server-timing"]
    cli_out = CliRunner().invoke(cli, ["query", str(clip), "--index", str(ix), "-k", "5", "--json"])
    assert cli_out.exit_code == 0, cli_out.output
    expected = json.loads(cli_out.output)
    got = res.json()
    assert [list(h) for h in got] == [list(h) for h in expected]
    assert [h["path"] for h in got] == [h["path"] for h in expected]
    np.testing.assert_allclose([h["score"] for h in got], [h["score"] for h in expected], atol=1e-6)
    assert got[0]["path"] == "chirp/chirp_01.wav"


def test_upload_of_a_window_finds_that_window_of_a_long_file(client: TestClient) -> None:
    res = client.post("/api/search", files={"file": ("q.wav", wav_bytes(long_audio("long_a")[8 * SR: 12 * SR]))},
                      data={"k": 3, "windows": "true"})
    top = res.json()[0]
    assert (top["path"], top["start_s"], top["end_s"]) == ("long/long_a.wav", 8.0, 12.0)


def test_search_by_indexed_file_and_window(client: TestClient, built: tuple[Path, Path]) -> None:
    corpus, ix = built
    fid = file_id(client, "vowel/vowel_02.wav")
    hits = client.post("/api/search", data={"file_id": fid, "k": 4}).json()
    assert len(hits) == 4 and all(h["file_id"] != fid for h in hits)
    with Index.open(ix) as idx:  # the stored vector ranks like the file's own audio, minus itself
        ref = idx.search(corpus / "vowel" / "vowel_02.wav", k=5)
    ref = ref[ref.file_id != fid]
    assert [h["path"] for h in hits] == ref.path.tolist()
    np.testing.assert_allclose([h["score"] for h in hits], ref.score, atol=1e-5)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    win = hits[0]["window_id"]
    more = client.post("/api/search", data={"window_id": win, "k": 3, "windows": "true"}).json()
    assert more and all(h["file_id"] != hits[0]["file_id"] for h in more)


def test_where_filters_and_bad_filters(client: TestClient) -> None:
    q = {"file": ("q.wav", wav_bytes(long_audio("long_b")[:4 * SR]))}
    hits = client.post("/api/search", files=q, data={"k": 20, "where": ["label = 'tone'"]}).json()
    assert hits and {h["label"] for h in hits} == {"tone"}
    bad = client.post("/api/search", files=q, data={"where": "colour = 'red'"})
    assert bad.status_code == 400
    assert "colour" in bad.json()["error"] and "\n" not in bad.json()["error"]


def test_audio_is_served_whole_with_ranges_and_as_slices(client: TestClient, built: tuple[Path, Path]) -> None:
    corpus, _ = built
    fid = file_id(client, "long/long_a.wav")
    raw = (corpus / "long" / "long_a.wav").read_bytes()
    whole = client.get(f"/api/files/{fid}/audio")
    assert whole.status_code == 200 and whole.content == raw and whole.headers["content-type"] == "audio/wav"
    part = client.get(f"/api/files/{fid}/audio", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == raw[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(raw)}"
    sliced = client.get(f"/api/files/{fid}/audio", params={"start_s": 4.0, "end_s": 6.5})
    audio, sr = sf.read(io.BytesIO(sliced.content), dtype="float32")
    assert sr == SR and len(audio) == int(2.5 * SR)
    ref, _ = sf.read(corpus / "long" / "long_a.wav", dtype="float32", start=4 * SR, stop=int(6.5 * SR))
    np.testing.assert_allclose(audio, ref, atol=1 / 32768)


def test_spectrogram_thumbnail_marks_the_window_and_is_cached(client: TestClient) -> None:
    from PIL import Image

    fid = file_id(client, "long/long_a.wav")
    url = f"/api/files/{fid}/spectrogram.png"
    thumbs = client.app.state.thumbnails
    before = thumbs.rendered
    res = client.get(url, params={"start_s": 4.0, "end_s": 8.0, "width": 320, "height": 60})
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(res.content)).convert("RGB"), np.float32)
    assert img.shape == (60, 320, 3)
    inside, outside = img[:, 90:150].mean(), np.concatenate([img[:, :70], img[:, 170:]], axis=1).mean()
    assert inside > 1.8 * outside  # 4-8 s of 16 s is x = 80..160, and the rest is dimmed
    again = client.get(url, params={"start_s": 4.0, "end_s": 8.0, "width": 320, "height": 60})
    assert again.content == res.content and thumbs.rendered == before + 1


@pytest.mark.parametrize("path", [
    "/api/files/..%2F..%2F..%2Fetc%2Fpasswd/audio",
    "/api/files/%2Fetc%2Fpasswd/audio",
    "/api/files/../../../etc/passwd/audio",
    "/api/files//etc/passwd/audio",
    "/api/files/999999/audio",
    "/api/files/-1/audio",
    "/api/files/999999/spectrogram.png",
    "/static/..%2F..%2Findexes.py",
    "/static/../app.py",
])
def test_no_file_outside_the_index_is_served(client: TestClient, path: str) -> None:
    res = client.get(path)
    assert res.status_code == 404, (path, res.status_code, res.text[:200])
    assert b"root:" not in res.content and b"import" not in res.content


def test_uploads_are_limited_and_undecodable_ones_get_the_reason(held: IndexSet) -> None:
    small = TestClient(create_app(held, limits=Limits(max_bytes=200_000, max_duration_s=3.0)))
    big = small.post("/api/search", files={"file": ("big.wav", wav_bytes(np.zeros(150_000, np.float32)))})
    assert big.status_code == 413 and "200 MB" not in big.json()["error"] and "limit" in big.json()["error"]
    long = small.post("/api/search", files={"file": ("long.wav", wav_bytes(np.zeros(5 * SR, np.float32)))})
    assert long.status_code == 413 and "5 s long" in long.json()["error"]
    junk = small.post("/api/search", files={"file": ("junk.wav", b"RIFF\x00\x00not really audio" * 10)})
    assert junk.status_code == 400
    msg = junk.json()["error"]
    assert msg.startswith("cannot decode junk.wav: ") and len(msg) > len("cannot decode junk.wav: ") + 5
    assert "retrieve-upload-" not in msg and "/tmp" not in msg  # the upload's name, not the server's copy
    junk_m4a = small.post("/api/search", files={"file": ("notes.m4a", b"not audio either" * 10)})
    assert junk_m4a.status_code == 400 and "retrieve-upload-" not in junk_m4a.json()["error"]
    assert "/tmp" not in junk_m4a.json()["error"]
    nothing = small.post("/api/search", data={"k": 3})
    assert nothing.status_code == 400 and "file_id" in nothing.json()["error"]


def test_text_on_an_index_without_a_text_tower_is_one_readable_line(client: TestClient) -> None:
    res = client.post("/api/text", data={"text": "dog barking"})
    assert res.status_code == 400
    assert "clap" in res.json()["error"] and "\n" not in res.json()["error"]
    info = client.get("/api/info").json()["serve"]
    assert info["has_text"] is False and "clap" in info["text_disabled_reason"]


def test_info_is_the_cli_info_plus_filters(client: TestClient, built: tuple[Path, Path]) -> None:
    info = client.get("/api/info").json()
    cli_out = json.loads(CliRunner().invoke(cli, ["info", "--index", str(built[1]), "--json"]).output)
    assert set(cli_out) <= set(info) and info["files"] == cli_out["files"] == 17
    label = next(f for f in info["serve"]["filters"] if f["name"] == "label")
    assert label["values"] == ["chirp", "clicks", "long", "noise", "tone", "vowel"]


def test_classify_votes_like_the_cli(client: TestClient, built: tuple[Path, Path]) -> None:
    corpus, ix = built
    clip, _ = sf.read(corpus / "tone" / "tone_01.wav", dtype="float32")
    res = client.post("/api/classify", files={"file": ("t.wav", wav_bytes(clip))}, data={"k": 3})
    row = res.json()[0]
    assert row["predicted"] == "tone" and row["error"] is None and len(row["neighbours"]) == 3
    with Index.open(ix) as idx:
        ref = idx.classify(clip, 3, sample_rate=SR).iloc[0]
    assert [n[0] for n in row["neighbours"]] == [n[0] for n in ref.neighbours]
    by_id = client.post("/api/classify", data={"file_id": file_id(client, "tone/tone_00.wav"), "k": 3}).json()[0]
    assert by_id["predicted"] == "tone" and "tone/tone_00.wav" not in [n[0] for n in by_id["neighbours"]]


def test_locate_gives_events_and_the_curve(client: TestClient) -> None:
    fid = file_id(client, "long/long_a.wav")
    q = wav_bytes(long_audio("long_a")[8 * SR: 12 * SR])
    res = client.post("/api/locate", files={"file": ("q.wav", q)}, data={"target_id": fid})
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["long_file"] == "long/long_a.wav" and out["duration_s"] == pytest.approx(16.0)
    c = out["curve"]
    assert len(c["start_s"]) == len(c["score"]) >= 5
    best = int(np.argmax(c["score"]))
    assert c["start_s"][best] == pytest.approx(8.0)
    assert any(e["start_s"] <= 8.0 + 1e-6 and e["end_s"] >= 12.0 - 1e-6 for e in out["events"])


def test_token_is_required_on_every_request(held: IndexSet) -> None:
    guarded = TestClient(create_app(held, token="s3cret"))
    assert guarded.get("/api/info").status_code == 401
    assert guarded.get("/api/files/1/audio").status_code == 401
    assert guarded.get("/").status_code == 401
    assert guarded.get("/api/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    page = guarded.get("/", params={"token": "s3cret"})  # the page sets a cookie for its own requests
    assert page.status_code == 200 and guarded.cookies.get("retrieve_token") == "s3cret"
    assert guarded.get("/api/info").status_code == 200


def test_binding_beyond_loopback_needs_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "t")
    with pytest.raises(InputError, match="--token"):
        check_bind("0.0.0.0", None)
    out = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"], env={"RETRIEVE_TOKEN": ""})
    assert out.exit_code == 1 and "refusing to serve on 0.0.0.0 without a token" in out.output
    assert "Traceback" not in out.output


def test_serve_help_and_openapi(client: TestClient) -> None:
    out = CliRunner().invoke(cli, ["serve", "--help"])
    assert out.exit_code == 0 and "--token" in out.output and "RETRIEVE_TOKEN" in out.output
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/text", "/api/classify", "/api/locate", "/api/info",
            "/api/files/{file_id}/audio", "/api/files/{file_id}/spectrogram.png"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    for asset in ("/", "/static/app.js", "/static/style.css"):  # nothing is fetched from elsewhere
        assert "://" not in client.get(asset).text


def test_retrieve_serve_starts_says_where_and_answers(built: tuple[Path, Path]) -> None:
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "retrieval", "serve", "--index", str(built[1]), "--port", str(port),
                             "--token", "t0k"], cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not come up"
            try:
                res = httpx.get(f"http://127.0.0.1:{port}/api/info", headers={"Authorization": "Bearer t0k"})
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert res.status_code == 200 and res.json()["files"] == 17
        assert httpx.get(f"http://127.0.0.1:{port}/api/info").status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"page http://127.0.0.1:{port}/" in out and "token is required" in out and "Traceback" not in out


def test_thumbnail_of_a_long_file_shows_the_span_around_the_match() -> None:
    from retrieval.serve.media import THUMB_MAX_S, view_span

    assert view_span(12.0, (4.0, 8.0)) == (0.0, 12.0)
    assert view_span(1200.0, (600.0, 604.0)) == (602.0 - THUMB_MAX_S / 2, 602.0 + THUMB_MAX_S / 2)
    assert view_span(1200.0, (1.0, 5.0)) == (0.0, THUMB_MAX_S)
    assert view_span(1200.0, (1196.0, 1200.0)) == (1200.0 - THUMB_MAX_S, 1200.0)


def test_heavy_requests_wait_for_a_slot_and_searches_by_file_do_not(held: IndexSet) -> None:
    """With every heavy slot taken, a search by an indexed file still answers at once, while an
    upload and an uncached thumbnail wait for the slot and report the wait in Server-Timing."""
    import threading
    import time

    app = create_app(held, heavy_slots=1)
    client = TestClient(app)
    fid = file_id(client, "long/long_b.wav")
    sem = app.state.heavy._sem
    assert app.state.heavy.slots == 1
    sem.acquire()  # every heavy slot is now taken
    answers: dict[str, tuple[int, str]] = {}

    def heavy(name: str, call) -> None:
        res = call()
        answers[name] = (res.status_code, res.headers.get("server-timing", ""))

    threads = [
        threading.Thread(target=heavy, args=("upload", lambda: client.post(
            "/api/search", files={"file": ("q.wav", wav_bytes(long_audio("long_b")[: 4 * SR]))}, data={"k": 3}))),
        threading.Thread(target=heavy, args=("thumbnail", lambda: client.get(
            f"/api/files/{fid}/spectrogram.png", params={"start_s": 1.0, "end_s": 5.0, "width": 99}))),
    ]
    try:
        for th in threads:
            th.start()
        time.sleep(0.5)
        assert not answers, "a heavy request ran while every slot was taken"
        cheap = client.post("/api/search", data={"file_id": fid, "k": 3})
        assert cheap.status_code == 200 and len(cheap.json()) == 3
        assert "queue;dur" not in cheap.headers["server-timing"]
        assert not answers  # still waiting: the cheap search went past them
    finally:
        sem.release()
    for th in threads:
        th.join(60)
    assert answers["upload"][0] == 200 and answers["thumbnail"][0] == 200
    for name in ("upload", "thumbnail"):
        waited = float(answers[name][1].split("queue;dur=")[1].split(",")[0]) / 1e3
        assert waited > 0, (name, answers[name])  # the wait itself is shown above: no answer while the slot was held
    with pytest.raises(InputError, match="0 \\(no limit\\)"):
        create_app(held, heavy_slots=-1)


def test_the_deprecated_segment_names_still_work(client: TestClient) -> None:
    """Fields and keys from before "segment" became "window" (retrieval.legacy): same answers."""
    hits = client.post("/api/search", data={"file_id": 1, "k": 3, "windows": "true"}).json()
    assert hits and all(h["segment_id"] == h["window_id"] for h in hits)
    win = hits[0]["window_id"]
    new = client.post("/api/search", data={"window_id": win, "k": 3, "windows": "true"}).json()
    old = client.post("/api/search", data={"segment_id": win, "k": 3, "segments": "true"}).json()
    assert old == new and len({h["window_id"] for h in new}) == len(new)  # windows, not files
    info = client.get("/api/info").json()
    assert info["segments"] == info["windows"] > 0 and info["index"]["segment"] == info["index"]["window"]
    assert info["faiss_ntotal_segment"] == info["faiss_ntotal_window"]
