"""The labelling loop of `retrieve serve` through FastAPI's test client: label, train, score, suggest;
the same answers as the CLI's ``--json``; one-line errors; token, cross-site and writer safety."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from retrieval.cli import cli  # noqa: E402
from retrieval.serve.app import create_app  # noqa: E402
from retrieval.serve.indexes import IndexSet, source_version  # noqa: E402
from tests.serve_fixtures import build_index  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_index(tmp_path_factory.mktemp("serve_labels"))


@pytest.fixture(scope="module")
def held(built: tuple[Path, Path]) -> IndexSet:
    s = IndexSet([built[1]])
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(held: IndexSet) -> TestClient:
    return TestClient(create_app(held, heavy_processes=0), base_url="http://127.0.0.1:8000")


def windows_of(client: TestClient, built: tuple[Path, Path], cls: str, k: int = 40) -> list[dict]:
    """Window hits of searching with ``cls``'s first clip, as the page shows them."""
    clip = built[0] / cls / f"{cls}_00.wav"
    res = client.post("/api/search", files={"file": (clip.name, clip.read_bytes())}, data={"k": k, "windows": "true"})
    assert res.status_code == 200, res.text
    return res.json()


def cli_json(*args: str) -> object:
    out = CliRunner().invoke(cli, [*args, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_label_train_score_suggest_round_trip_answers_what_the_cli_prints(
        client: TestClient, held: IndexSet, built: tuple[Path, Path]) -> None:
    ix = str(built[1])
    hits = windows_of(client, built, "chirp")
    pos = [h for h in hits if h["label"] == "chirp"][:2]
    neg = [h for h in hits if h["label"] in ("tone", "noise")][:2]
    assert len(pos) == 2 and len(neg) == 2
    live = held.get(None)
    version = live.current().version
    res = client.post("/api/labels", data={"target": "chirpy", "label": "positive",
                                           "window_id": [h["window_id"] for h in pos]})
    assert res.status_code == 200, res.text
    assert res.json() == {"labels": 2, "source": "serve", "target": "chirpy",
                          "counts": {"positive": 2, "negative": 0, "uncertain": 0}}
    # a label is a write of labels.sqlite, read live: no snapshot is published for it, and the
    # next request (on the same snapshot) already sees it
    assert live.current().version == version and source_version(built[1]) == version
    assert "chirpy" in client.get("/api/info").json()["serve"]["targets"]  # the page offers it next time
    for h in neg:
        res = client.post("/api/labels", data={"target": "chirpy", "label": "-", "window_id": h["window_id"]})
    assert res.json()["counts"] == {"positive": 2, "negative": 2, "uncertain": 0}

    listed = client.get("/api/labels", params={"target": "chirpy"}).json()
    assert listed == cli_json("labels", "--index", ix, "--target", "chirpy")
    assert {(r["path"], r["start_s"], r["end_s"]) for r in listed if r["label"] == "positive"} == {
        (h["path"], h["start_s"], h["end_s"]) for h in pos}
    assert {r["source"] for r in listed} == {"serve"}
    counts = client.get("/api/labels", params={"target": "chirpy", "counts": "true"}).json()
    assert counts == cli_json("labels", "--index", ix, "--target", "chirpy", "--counts")
    windows = client.get("/api/labels", params={"target": "chirpy", "windows": "true"}).json()
    by_window = {w["window_id"]: w["label"] for w in windows}
    assert all(by_window[h["window_id"]] == "positive" for h in pos)
    assert all(by_window[h["window_id"]] == "negative" for h in neg)
    assert {w["target"] for w in windows} == {"chirpy"}

    trained = client.post("/api/train", data={"target": "chirpy", "weak_negatives": 0.2})
    assert trained.status_code == 200, trained.text
    (summary,) = trained.json()
    assert summary["target"] == "chirpy" and summary["head"] == "linear" and summary["weak_weight"] == 0.2
    assert summary["positives"] >= 2 and summary["negatives"] >= 2
    assert summary["windows"] == summary["positives"] + summary["negatives"] + summary["weak_negatives"]
    scored = client.post("/api/score", data={"target": "chirpy"}).json()
    assert [(s["target"], s["column"], s["windows"]) for s in scored] == [("chirpy", "score_chirpy",
                                                                          summary["windows"])]

    got = client.get("/api/suggest", params={"target": "chirpy", "n": 5}).json()
    expected = cli_json("suggest", "--index", ix, "--target", "chirpy", "-n", "5")
    assert [g["window_id"] for g in got] == [e["window_id"] for e in expected] and len(got) == 5
    for g, e in zip(got, expected):
        assert {k: g[k] for k in e} == pytest.approx(e)  # every column of `retrieve suggest --json` ...
        assert g["score"] == g["score_chirpy"]  # ... and those of a search hit, to render and play it
        assert set(hits[0]) <= set(g)
    labelled = {h["window_id"] for h in pos + neg}
    assert not labelled & {g["window_id"] for g in got}
    margins = [g["margin"] for g in got]
    assert margins == sorted(margins) and margins == [pytest.approx(abs(g["score"] - 0.5)) for g in got]
    assert client.get(f"/api/files/{got[0]['file_id']}/audio",
                      params={"start_s": got[0]["start_s"], "end_s": got[0]["end_s"]}).status_code == 200

    # a suggestion labelled in place leaves the next list
    res = client.post("/api/labels", data={"target": "chirpy", "label": "uncertain",
                                           "window_id": got[0]["window_id"]})
    assert res.json()["counts"]["uncertain"] == 1
    top = client.get("/api/suggest", params={"target": "chirpy", "n": 5, "strategy": "top"}).json()
    assert got[0]["window_id"] not in {t["window_id"] for t in top}
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)


def test_a_span_of_an_indexed_file_is_labelled_by_file_id(client: TestClient, held: IndexSet) -> None:
    with held.get(None).use() as snap:
        fid = int(snap.files.index[snap.files["path"] == "long/long_a.wav"][0])
    res = client.post("/api/labels", data={"target": "vowelish", "label": "positive", "file_id": fid,
                                           "start_s": 8.0, "end_s": 12.0})
    assert res.status_code == 200, res.text
    whole = client.post("/api/labels", data={"target": "vowelish", "label": "negative", "file_id": fid + 1})
    assert whole.json()["counts"] == {"positive": 1, "negative": 1, "uncertain": 0}
    rows = client.get("/api/labels", params={"target": "vowelish"}).json()
    span = next(r for r in rows if r["label"] == "positive")
    assert (span["path"], span["start_s"], span["end_s"]) == ("long/long_a.wav", 8.0, 12.0)
    assert next(r for r in rows if r["label"] == "negative")["end_s"] is None  # the whole file


@pytest.mark.parametrize(("call", "words"), [
    (("post", "/api/labels", {"target": "bad target", "label": "positive", "window_id": 1}), "letters, digits"),
    (("post", "/api/labels", {"target": "t", "label": "maybe", "window_id": 1}), "positive, negative"),
    (("post", "/api/labels", {"target": "t", "label": "positive"}), "window_id"),
    (("post", "/api/labels", {"target": "t", "label": "positive", "window_id": 999999}), "no indexed window"),
    (("post", "/api/labels", {"target": "t", "label": "positive", "file_id": 999999}), "no file with id"),
    (("post", "/api/train", {"target": "nobody_labelled"}), "no positive window"),
    (("post", "/api/train", {"target": "bad-name"}), "letters, digits"),
    (("post", "/api/score", {"target": "never_trained"}), "no head"),
    (("get", "/api/suggest", {"target": "never_scored"}), "no scores"),
    (("get", "/api/labels", {"target": "a b"}), "letters, digits"),
])
def test_bad_requests_are_one_readable_line(client: TestClient, call: tuple, words: str) -> None:
    method, path, fields = call
    res = client.post(path, data=fields) if method == "post" else client.get(path, params=fields)
    assert res.status_code in (400, 404), res.text
    msg = res.json()["error"]
    assert words in msg and "\n" not in msg and "Traceback" not in msg


def test_writes_need_the_token_and_come_from_this_site(client: TestClient, held: IndexSet,
                                                        built: tuple[Path, Path]) -> None:
    guarded = TestClient(create_app(held, token="s3cret", heavy_processes=0))
    form = {"target": "guarded", "label": "positive", "window_id": windows_of(client, built, "tone")[0]["window_id"]}
    for path in ("/api/labels", "/api/train", "/api/score"):
        assert guarded.post(path, data=form).status_code == 401
    assert guarded.get("/api/suggest", params={"target": "guarded"}).status_code == 401
    assert guarded.get("/api/labels").status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    cross = guarded.post("/api/labels", data=form, headers={**auth, "Origin": "http://evil.example"})
    assert cross.status_code == 403 and "another site" in cross.json()["error"]
    fetch = guarded.post("/api/labels", data=form, headers={**auth, "Sec-Fetch-Site": "cross-site"})
    assert fetch.status_code == 403
    assert guarded.get("/api/labels", params={"target": "guarded"}, headers=auth).json() == []
    own = guarded.post("/api/labels", data=form, headers={**auth, "Origin": "http://testserver"})
    assert own.status_code == 200 and own.json()["labels"] == 1, own.text


def test_without_a_token_writes_are_taken_at_a_loopback_host_only(held: IndexSet, client: TestClient,
                                                                  built: tuple[Path, Path]) -> None:
    """A page whose domain was re-pointed at 127.0.0.1 (DNS rebinding) is same-origin to itself;
    its writes name its own host, which a server without a token refuses."""
    win = windows_of(client, built, "tone")[1]["window_id"]
    form = {"target": "rebound", "label": "positive", "window_id": win}
    rebound = TestClient(create_app(held, heavy_processes=0), base_url="http://evil.example:8000")
    res = rebound.post("/api/labels", data=form, headers={"Origin": "http://evil.example:8000"})
    assert res.status_code == 403 and "127.0.0.1 or localhost" in res.json()["error"]
    assert rebound.get("/api/labels", params={"target": "rebound"}).json() == []  # reads still answer
    for base in ("http://localhost:8000", "http://[::1]:8000"):
        ok = TestClient(create_app(held, heavy_processes=0), base_url=base).post("/api/labels", data=form)
        assert ok.status_code == 200, (base, ok.text)


def test_labels_are_taken_while_another_process_writes_the_index(client: TestClient, held: IndexSet,
                                                                 built: tuple[Path, Path]) -> None:
    """While another process holds the index (an ingest), searches answer from the published
    snapshot and labels are still stored (they do not need meta.duckdb) and seen at once; a
    head, which does, waits a few seconds, then answers 409 in one line."""
    live = held.get(None)
    one, two = (h["window_id"] for h in windows_of(client, built, "noise")[:2])
    with live.use() as old:  # a request in flight across a label keeps its snapshot open and usable
        assert client.post("/api/labels", data={"target": "held", "label": "+", "window_id": one}).status_code == 200
        assert live.current() is old and not old.retired
        assert len(old.index.search_indexed(3, window_id=one)) == 3
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from retrieval.store import Store\n"
         "with Store.open(Path(sys.argv[1]), writable=True) as s:\n"
         "    print('ready', flush=True); sys.stdin.read()", str(built[1])],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert client.post("/api/search", data={"window_id": one, "k": 3}).status_code == 200
        res = client.post("/api/labels", data={"target": "held", "label": "-", "window_id": two})
        assert res.status_code == 200, res.text
        assert res.json()["counts"] == {"positive": 1, "negative": 1, "uncertain": 0}
        windows = client.get("/api/labels", params={"target": "held", "windows": "true"}).json()
        assert {(w["window_id"], w["label"]) for w in windows} >= {(one, "positive"), (two, "negative")}
        res = client.post("/api/train", data={"target": "held", "weak_negatives": 0})
        assert res.status_code == 409, res.text
        assert "holds it open" in res.json()["error"] and "\n" not in res.json()["error"]
    finally:
        holder.communicate("", timeout=60)
    assert client.post("/api/train", data={"target": "held", "weak_negatives": 0}).status_code == 200


def test_a_write_swaps_in_a_new_snapshot_and_requests_in_flight_keep_theirs(
        client: TestClient, held: IndexSet, built: tuple[Path, Path]) -> None:
    live = held.get(None)
    one = windows_of(client, built, "tone")[2]["window_id"]
    assert client.post("/api/labels", data={"target": "inflight", "label": "+", "window_id": one}).status_code == 200
    with live.use() as old:
        assert client.post("/api/train", data={"target": "inflight", "weak_negatives": 0.1}).status_code == 200
        assert live.current() is not old and old.retired
        assert len(old.index.search_indexed(3, window_id=one)) == 3


def test_openapi_lists_the_labelling_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/labels", "/api/train", "/api/score", "/api/suggest"} <= set(paths)
    assert {"get", "post"} <= set(paths["/api/labels"])


def test_labels_set_by_the_cli_reach_the_running_server(client: TestClient, held: IndexSet,
                                                        built: tuple[Path, Path], tmp_path: Path) -> None:
    """`retrieve label` in a shell writes labels.sqlite, which the server reads live: it sees the
    label at once, without a restart or a new snapshot."""
    csv = tmp_path / "labels.csv"
    csv.write_text("path,start_s,end_s,target,label\ntone/tone_01.wav,,,from_cli,positive\n")
    version = source_version(built[1])
    out = CliRunner().invoke(cli, ["label", "--index", str(built[1]), "--csv", str(csv)])
    assert out.exit_code == 0, out.output
    assert source_version(built[1]) == version
    assert client.get("/api/labels", params={"target": "from_cli", "counts": "true"}).json() == [
        {"target": "from_cli", "label": "positive", "count": 1}]
