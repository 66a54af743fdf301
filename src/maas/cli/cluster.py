"""``maas cluster status``: the nodes and where each loaded model's replicas run.

A view of ``GET /api/v1/cluster`` (admin key): one table of nodes with what each offers
and has free, one of replicas by model, with the node's address beside its id so an
operator can go to the machine.
"""

from __future__ import annotations

from typing import Any

import typer

from maas.cli.output import print_json, print_table
from maas.cli.remote import http_for, remote_of, reports_errors
from maas.client._core import raise_for_error

__all__ = ["cluster_app"]

cluster_app = typer.Typer(no_args_is_help=True)

_GIB = 1024**3


@cluster_app.command("status")
@reports_errors
def status_command(ctx: typer.Context) -> None:
    """Nodes (CPUs, memory, free), and each loaded model's replicas: node, pid, in flight."""
    with http_for(ctx) as http:
        response = http.get("/api/v1/cluster")
    raise_for_error(response)
    body: dict[str, Any] = response.json()
    if remote_of(ctx).wants_json:
        print_json(body)
        return
    nodes: list[dict[str, Any]] = body["nodes"]
    where = f" at {body['address']}" if body.get("address") else ""
    print_table(
        f"{body['backend']} backend{where}: {sum(n['alive'] for n in nodes)} of {len(nodes)} "
        "nodes alive",
        ["node", "address", "role", "alive", "CPU (free)", "memory GiB (free)", "other"],
        [_node_row(node) for node in nodes],
    )
    addresses = {node["node_id"]: node["address"] for node in nodes}
    rows = [
        [
            f"{deployment['model']}:{deployment['version']}",
            deployment["state"],
            replica["replica"],
            "yes" if replica["alive"] else "no",
            _short(replica["node"]),
            addresses.get(replica["node"], ""),
            replica["pid"],
            replica.get("in_flight", ""),
            replica.get("calls_by", ""),
        ]
        for deployment in body["deployments"]
        for replica in deployment["replicas"] or [_NO_REPLICA]
    ]
    print_table(
        "replicas",
        ["model", "state", "replica", "alive", "node", "address", "pid", "in flight", "calls by"],
        rows,
    )


_NO_REPLICA: dict[str, Any] = {"replica": "", "alive": False, "node": None, "pid": None}


def _node_row(node: dict[str, Any]) -> list[Any]:
    total, free = node["resources"], node["available"]
    other = ", ".join(
        f"{name}={value:g}" for name, value in sorted(total.items()) if name not in _SHOWN
    )
    return [
        _short(node["node_id"]),
        node["address"],
        "head" if node["is_head"] else "worker",
        "yes" if node["alive"] else "no",
        _amount(total.get("CPU"), free.get("CPU"), 1),
        _amount(total.get("memory"), free.get("memory"), _GIB),
        other,
    ]


_SHOWN = {"CPU", "memory", "object_store_memory"}


def _amount(total: float | None, free: float | None, unit: float) -> str:
    if total is None:
        return ""
    shown = f"{total / unit:.3g}"
    return shown if free is None else f"{shown} ({free / unit:.3g})"


def _short(node_id: str | None) -> str:
    """Ray's node ids are 56 hex digits; 12 tell them apart."""
    return (node_id or "")[:12]
