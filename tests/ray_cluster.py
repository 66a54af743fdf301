"""A simulated Ray cluster on loopback for the tests: a head and worker nodes of 2 CPUs,
all on 127.0.0.1, no dashboard, a small object store.

``tests/conftest.py`` sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before any test
module imports Ray, which keeps the cluster on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray.cluster_utils import Cluster

__all__ = ["NODE", "Cluster", "loopback_cluster"]

#: What each simulated node offers; tests add nodes with it (and extra resources).
NODE: dict[str, Any] = {
    "num_cpus": 2,
    "object_store_memory": 80 * 1024 * 1024,
    "node_ip_address": "127.0.0.1",
}


@contextmanager
def loopback_cluster(workers: int, head: dict[str, Any] | None = None) -> Iterator[Cluster]:
    """A head and ``workers`` worker nodes, shut down when the block ends; ``head``
    overrides what the head offers (``{"num_cpus": 0}``: nothing runs there, as on a
    cluster whose head only schedules)."""
    head_args = {**NODE, "include_dashboard": False, **(head or {})}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    try:
        for _ in range(workers):
            cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
