"""The page in a real browser (Playwright driving Debian's chromium): upload, results, play the match.

``scripts/test.sh`` installs chromium (apt) and the Python packages this needs. Set
``RETRIEVE_SERVE_SCREENSHOT=docs/serve.png`` to also write the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = os.environ.get("RETRIEVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no chromium binary (apt-get install chromium, or set RETRIEVE_CHROMIUM)", allow_module_level=True)

from retrieval.serve.app import create_app  # noqa: E402
from retrieval.serve.indexes import IndexSet  # noqa: E402
from tests.serve_fixtures import SR, build_index, long_audio  # noqa: E402

K = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _, ix = build_index(tmp_path_factory.mktemp("browser"))
    held = IndexSet([ix])
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(held), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)
    held.close()


def test_upload_shows_k_results_with_thumbnails_and_plays_the_matched_window(server: str, tmp_path: Path) -> None:
    clip = tmp_path / "query.wav"
    sf.write(clip, long_audio("long_a")[8 * SR: 12 * SR] + np.float32(0), SR, subtype="PCM_16")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server)
            page.wait_for_function("document.querySelector('#summary').textContent.includes('files')")
            page.fill("#k", str(K))
            page.press("#k", "Tab")  # commit k before the upload (a change of k re-runs the search)
            page.set_input_files("#file", str(clip))
            page.wait_for_function(f"document.querySelectorAll('#results .hit').length === {K}")
            page.wait_for_function("[...document.querySelectorAll('#results .thumb')].every("
                                   "i => i.complete && i.naturalWidth > 0)")
            hits = page.locator("#results .hit")
            assert hits.count() == K
            assert page.locator("#error").is_hidden()
            first = hits.nth(0)
            assert first.locator(".path").inner_text() == "long/long_a.wav"
            start_s = float(first.get_attribute("data-start-s"))
            end_s = float(first.get_attribute("data-end-s"))
            assert (start_s, end_s) == (8.0, 12.0)
            first.evaluate("el => { const a = el.querySelector('audio.player');"
                           " a.addEventListener('playing', () => { window.__playedFrom = a.currentTime; },"
                           " { once: true }); }")
            first.locator(".play").click()
            page.wait_for_function("window.__playedFrom !== undefined", timeout=15000)
            played_from = page.evaluate("window.__playedFrom")
            assert abs(played_from - start_s) <= 0.1, played_from
            page.wait_for_timeout(600)
            now = first.evaluate("el => el.querySelector('audio.player').currentTime")
            assert start_s + 0.05 < now <= end_s + 0.3, (played_from, now)
            first.locator(".where-in").click()  # a long file: the similarity-over-time strip
            page.wait_for_selector("#results .hit >> nth=0 >> .strip-wrap:not([hidden])")
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("RETRIEVE_SERVE_SCREENSHOT"):  # the README's copy, in 128 colours
                from PIL import Image

                Image.open(shot).convert("RGB").quantize(128).save(os.environ["RETRIEVE_SERVE_SCREENSHOT"],
                                                                   optimize=True)
            assert not errors, errors
        finally:
            browser.close()


def test_bad_upload_is_one_line_on_the_page(server: str, tmp_path: Path) -> None:
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"this is not audio at all" * 20)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server)
            page.wait_for_function("document.querySelector('#summary').textContent.includes('files')")
            assert page.locator("#text").is_disabled()  # a logmel index has no text tower, and says why
            assert "clap" in page.locator("#text-reason").inner_text()
            page.set_input_files("#file", str(junk))
            page.wait_for_selector("#error:not([hidden])")
            msg = page.locator("#error").inner_text()
            assert msg.startswith("cannot decode notes.wav") and "\n" not in msg and "Traceback" not in msg
        finally:
            browser.close()


def test_recording_from_the_microphone_searches(server: str) -> None:
    """MediaRecorder with chromium's fake microphone (a beep): its webm/opus upload decodes and finds results."""
    pytest.importorskip("av", reason="decoding a browser recording (webm/opus) needs PyAV")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--use-fake-device-for-media-stream",
                                           "--use-fake-ui-for-media-stream"])
        try:
            page = browser.new_context(permissions=["microphone"]).new_page()
            page.goto(server)
            page.wait_for_function("document.querySelector('#summary').textContent.includes('files')")
            page.click("#record")
            page.wait_for_selector("#record.on")
            page.wait_for_timeout(1500)
            page.click("#record")
            page.wait_for_function("document.querySelectorAll('#results .hit').length > 0", timeout=20000)
            assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
            assert page.locator("#query-name").inner_text().startswith("recording.")
            page.click(".tab[data-tab=classify]")  # the kNN vote for the same query, with its voters
            page.wait_for_selector("#classify-out .predicted")
            assert "confidence" in page.locator("#classify-out .predicted").inner_text()
            assert page.locator("#classify-out table.votes").count() == 2
        finally:
            browser.close()


def test_label_buttons_count_and_train_and_suggest_lists_playable_windows(server: str, tmp_path: Path) -> None:
    """Name a target, mark results + and −: the counts follow. Train & suggest lists windows with
    the head's score, which play and can be labelled in place."""
    clip = tmp_path / "vowel.wav"
    sf.write(clip, long_audio("long_a")[8 * SR: 12 * SR], SR, subtype="PCM_16")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1200})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server)
            page.wait_for_function("document.querySelector('#summary').textContent.includes('files')")
            count = lambda name: int(page.locator(f"#n-{name}").inner_text())  # noqa: E731
            page.set_input_files("#file", str(clip))
            page.wait_for_function("document.querySelectorAll('#results .hit').length >= 6")
            hits = page.locator("#results .hit")
            hits.nth(0).locator(".lab[data-label=positive]").click()  # no target yet: says what to do
            page.wait_for_selector("#error:not([hidden])")
            assert "target" in page.locator("#error").inner_text() and count("positive") == 0
            page.fill("#target", "vowelish")
            page.press("#target", "Enter")
            page.wait_for_function("!document.body.classList.contains('no-target')")
            labels = {0: "positive", 1: "positive", 4: "negative", 5: "negative"}
            for i, (rank, label) in enumerate(labels.items()):
                hits.nth(rank).locator(f".lab[data-label={label}]").click()
                want = sum(1 for v in list(labels.values())[: i + 1] if v == label)
                page.wait_for_function(f"document.querySelector('#n-{label}').textContent === '{want}'")
            assert (count("positive"), count("negative"), count("uncertain")) == (2, 2, 0)
            assert hits.nth(0).get_attribute("data-labelled") == "positive"
            assert page.locator("#error").is_hidden()

            page.click("#train")
            page.wait_for_function("document.querySelectorAll('#suggest .hit').length > 0", timeout=60000)
            assert page.locator("#suggest").is_visible() and page.locator("#results").is_hidden()
            assert "windows scored" in page.locator("#train-state").inner_text()
            suggestions = page.locator("#suggest .hit")
            labelled = {hits.nth(r).get_attribute("data-window-id") for r in labels}
            shown = {suggestions.nth(i).get_attribute("data-window-id") for i in range(suggestions.count())}
            assert shown and not shown & labelled  # only windows without a label are suggested
            first = suggestions.nth(0)
            assert first.locator(".score").inner_text().startswith("p ")
            page.wait_for_function("(i => i.complete && i.naturalWidth > 0)("  # lower ones load lazily
                                   "document.querySelector('#suggest .hit .thumb'))")
            start_s = float(first.get_attribute("data-start-s"))
            first.evaluate("el => { const a = el.querySelector('audio.player');"
                           " a.addEventListener('playing', () => { window.__suggestFrom = a.currentTime; },"
                           " { once: true }); }")
            first.locator(".play").click()
            page.wait_for_function("window.__suggestFrom !== undefined", timeout=15000)
            assert abs(page.evaluate("window.__suggestFrom") - start_s) <= 0.1
            first.locator(".lab[data-label=uncertain]").click()  # labelled in place
            page.wait_for_function("document.querySelector('#n-uncertain').textContent === '1'")
            assert first.get_attribute("data-labelled") == "uncertain"
            page.screenshot(path=str(tmp_path / "suggest.png"))
            if os.environ.get("RETRIEVE_SERVE_SUGGEST_SCREENSHOT"):
                from PIL import Image

                Image.open(tmp_path / "suggest.png").convert("RGB").quantize(128).save(
                    os.environ["RETRIEVE_SERVE_SUGGEST_SCREENSHOT"], optimize=True)

            page.reload()  # the target is remembered, and the results labelled before are marked
            page.wait_for_function("document.querySelector('#n-uncertain').textContent === '1'")
            assert page.input_value("#target") == "vowelish"
            assert (count("positive"), count("negative")) == (2, 2)
            page.set_input_files("#file", str(clip))
            page.wait_for_function("document.querySelectorAll('#results .hit').length >= 6")
            page.wait_for_function("document.querySelector('#results .hit').dataset.labelled === 'positive'")
            assert hits.nth(4).get_attribute("data-labelled") == "negative"
            assert not errors, errors
        finally:
            browser.close()
