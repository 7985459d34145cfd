"""Checkpoint resolution never waits on a dead network."""

import socket
import threading

import pytest

from retrieval.encoders import weights
from retrieval.errors import WeightsNotFoundError


def test_a_stalled_name_lookup_is_cut_off(monkeypatch):
    """The probe answers while the lookup is still stalled: it never waits for the resolver."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    release, ended = threading.Event(), threading.Event()

    def stall(*args, **kwargs):
        release.wait(60)  # a resolver that answers only when the test lets it
        ended.set()
        raise OSError("name lookup stalled")  # as a resolver gives up; the probe's thread then ends cleanly

    monkeypatch.setattr(socket, "create_connection", stall)
    try:
        assert weights.hub_reachable(timeout_s=0.2) is False
        assert not ended.is_set()  # it returned while the lookup was still hanging
    finally:
        release.set()


def test_missing_hub_id_fails_fast_with_the_fixes(monkeypatch, tmp_path, network_attempts):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="--model.*RETRIEVE_CLAP_MODEL.*download.*laion/clap-htsat-unfused"):
        weights.resolve_checkpoint("clap", "laion/clap-htsat-unfused")
    assert network_attempts == []  # offline: no lookup, no connect, so nothing to wait for


def test_a_missing_local_path_says_so(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no beats checkpoint at"):
        weights.resolve_checkpoint("beats", str(tmp_path / "BEATs.pt"))
