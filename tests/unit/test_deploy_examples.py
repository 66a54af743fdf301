"""The deployment examples in ``deploy/`` stay valid: checked by the tools that read them."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy"


def test_the_ray_cluster_example_passes_rays_own_schema() -> None:
    config = yaml.safe_load((EXAMPLES / "ray-cluster.yaml").read_text())
    # As `ray up` reads it: filled out with the local provider's defaults, then checked
    # against the schema (a field Ray does not know, or of a wrong type, raises).
    validate_config(prepare_config(config))
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    # The workers join the port the head listens on, which is not Redis's.
    assert "--port=6380" in head_start and "$RAY_HEAD_IP:6380" in worker_start
    assert config["max_workers"] == len(config["provider"]["worker_ips"])
