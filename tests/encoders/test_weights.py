"""Checkpoint resolution never waits on a dead network."""

import socket
import time

import pytest

from retrieval.encoders import weights
from retrieval.errors import WeightsNotFoundError


def test_a_stalled_name_lookup_is_cut_off(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def stall(*args, **kwargs):
        time.sleep(30)  # a resolver that never answers
        raise OSError("name lookup stalled")  # as a resolver gives up; the probe's thread then ends cleanly

    monkeypatch.setattr(socket, "create_connection", stall)
    t0 = time.perf_counter()
    assert weights.hub_reachable(timeout_s=0.5) is False
    assert time.perf_counter() - t0 < 2.0


def test_missing_hub_id_fails_fast_with_the_fixes(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match="--model.*RETRIEVE_CLAP_MODEL.*download.*laion/clap-htsat-unfused"):
        weights.resolve_checkpoint("clap", "laion/clap-htsat-unfused")
    assert time.perf_counter() - t0 < 5.0


def test_a_missing_local_path_says_so(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no beats checkpoint at"):
        weights.resolve_checkpoint("beats", str(tmp_path / "BEATs.pt"))
