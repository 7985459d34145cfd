"""``--engine ray`` on a simulated two-node cluster (``ray.cluster_utils.Cluster``): the same index as local ingest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_ray_ingest import _assert_same, _corpus, _counts, _dump, _run, ray_process_path


def test_two_nodes_give_the_local_index(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    from ray.cluster_utils import Cluster

    from retrieval.ray_ingest import RayEngine

    before = ray_process_path(tmp_path_factory)
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
    finally:
        os.environ.pop("PYTHONPATH") if before is None else os.environ.__setitem__("PYTHONPATH", before)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        corpus = _corpus(tmp_path / "corpus")
        on_ray, _ = _run(corpus, tmp_path / "ray", RayEngine(actors=2), commit_every=4)  # one actor per node
        local, _ = _run(corpus, tmp_path / "local")
        assert _counts(on_ray) == _counts(local)
        _assert_same(_dump(tmp_path / "local"), _dump(tmp_path / "ray"))
    finally:
        ray.shutdown()
        cluster.shutdown()
