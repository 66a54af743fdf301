"""Every Prometheus metric of maas, defined once; the rest of the code imports these.

Labels are bounded: model names and versions come from the registry, never from a
caller's free text, and HTTP status codes are a small set. A request whose model never
resolved (an unknown model, a refusal before resolution) is counted under
``model=""`` and ``version=""`` (``UNRESOLVED``), so a flood of made-up names cannot
grow the series.

With several server processes, prometheus_client's multiprocess mode keeps each
process's values in files under ``PROMETHEUS_MULTIPROC_DIR`` and ``exposition`` sums
them at scrape time (``maas.observability.multiproc`` wipes and prunes those files).
Worker processes that run scikit-learn models record nothing themselves: the serving
process measures queue, batch and inference time around them. Every metric has labels,
so importing this module writes no value file.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

__all__ = [
    "BATCH_SIZE",
    "GC_COLLECTED",
    "GC_COLLECTED_BYTES",
    "INFERENCE_SECONDS",
    "INTER_TOKEN_SECONDS",
    "LOADED_MODELS",
    "LOAD_SECONDS",
    "QUEUE_DEPTH",
    "QUEUE_SECONDS",
    "REPLICA_CALLS",
    "REPLICA_CALL_SECONDS",
    "REPLICA_IN_FLIGHT",
    "REPLICA_UP",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SEQUENCES_RUNNING",
    "SEQUENCES_WAITING",
    "TIME_TO_FIRST_TOKEN_SECONDS",
    "TOKENS_GENERATED",
    "UNAVAILABLE",
    "UNRESOLVED",
    "WORKER_RESTARTS",
    "RequestMetrics",
    "exposition",
]

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

REQUESTS = Counter(
    "maas_requests_total",
    "Inference requests by model, version, protocol and HTTP status code.",
    ["model", "version", "protocol", "code"],
)
UNAVAILABLE = Counter(
    "maas_unavailable_total",
    "Requests of any protocol answered 503 because the server could not serve them at "
    "that moment (worker_crashed, shutting_down, overloaded, model_not_ready), by code.",
    ["code"],
)
REQUEST_SECONDS = Histogram(
    "maas_request_duration_seconds",
    "Inference request latency, from the first byte read to the response.",
    ["model", "version", "protocol"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_SECONDS = Histogram(
    "maas_queue_duration_seconds",
    "Time a request waited in its deployment's queue before a worker took it.",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "maas_inference_duration_seconds",
    "Time the runtime spent on one batch.",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "maas_batch_size",
    "Rows per batch handed to the runtime.",
    ["model", "version"],
    buckets=_BATCH_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "maas_queue_depth",
    "Requests waiting in a deployment's queue.",
    ["model", "version"],
    multiprocess_mode="livesum",
)
LOADED_MODELS = Gauge(
    "maas_loaded_models",
    "Loaded and ready deployments of a model version: 1 while it serves, 0 once unloaded "
    "(2 for a moment while a redeploy swaps a new deployment in).",
    ["model", "version"],
    multiprocess_mode="livesum",
)
LOAD_SECONDS = Histogram(
    "maas_model_load_duration_seconds",
    "Time to load a model version.",
    ["model", "version"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
WORKER_RESTARTS = Counter(
    "maas_worker_restarts_total",
    "Worker processes restarted after they died.",
    ["model", "version"],
)
# Replicas on a Ray cluster, one series per replica index (stable across restarts) so
# that a slow or flapping replica shows among its siblings; its node is a label of
# ``REPLICA_UP`` only (1 on the node it is on, 0 on those it left).
REPLICA_UP = Gauge(
    "maas_replica_up",
    "1 while a replica of a model on the Ray cluster answers its health ping, by the node "
    "it runs on (0 for a node it left or while it is lost).",
    ["model", "version", "replica", "node"],
    multiprocess_mode="livesum",
)
REPLICA_IN_FLIGHT = Gauge(
    "maas_replica_in_flight",
    "Calls this server has sent to a replica on the Ray cluster and not yet got back.",
    ["model", "version", "replica"],
    multiprocess_mode="livesum",
)
REPLICA_CALLS = Counter(
    "maas_replica_calls_total",
    "Calls to a replica on the Ray cluster by outcome: ok, error (the model refused the "
    "input) or lost (the replica died under the call; it was retried on another).",
    ["model", "version", "replica", "outcome"],
)
REPLICA_CALL_SECONDS = Histogram(
    "maas_replica_call_duration_seconds",
    "Time of one call to a replica on the Ray cluster, the hop there and back included.",
    ["model", "version", "replica"],
    buckets=_LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN_SECONDS = Histogram(
    "maas_time_to_first_token_seconds",
    "Time from a generation request's arrival to its first token.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INTER_TOKEN_SECONDS = Histogram(
    "maas_inter_token_latency_seconds",
    "Time between consecutive tokens of one sequence.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS_GENERATED = Counter(
    "maas_tokens_generated_total",
    "Completion tokens generated.",
    ["model"],
)
SEQUENCES_RUNNING = Gauge(
    "maas_sequences_running",
    "Sequences in the running generation batch.",
    ["model"],
    multiprocess_mode="livesum",
)
SEQUENCES_WAITING = Gauge(
    "maas_sequences_waiting",
    "Sequences waiting to join the generation batch.",
    ["model"],
    multiprocess_mode="livesum",
)
GC_COLLECTED = Counter(
    "maas_gc_collected_total",
    "Unreferenced blobs (store models or datasets) and derived cache directories (store "
    "cache) deleted by the garbage collector.",
    ["store"],
)
GC_COLLECTED_BYTES = Counter(
    "maas_gc_collected_bytes_total",
    "Bytes the garbage collector freed, by store (models, datasets, cache).",
    ["store"],
)


#: The model and version labels of a request whose model reference never resolved.
UNRESOLVED = ("", "")


class RequestMetrics:
    """``REQUESTS`` and ``REQUEST_SECONDS`` of one protocol, with bound children cached.

    ``Metric.labels(...)`` builds and hashes a label tuple under a lock on every call;
    inference records two series per request, so the bound children are kept per
    (model, version[, code]). The caches stay small because the labels are bounded.
    """

    __slots__ = ("_counts", "_latency", "protocol")

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self._counts: dict[tuple[str, str, int], Counter] = {}
        self._latency: dict[tuple[str, str], Histogram] = {}

    def observe(self, model: str, version: str, code: int, seconds: float) -> None:
        """Count one request that ended with HTTP ``code`` after ``seconds``."""
        latency = self._latency.get((model, version))
        if latency is None:
            latency = REQUEST_SECONDS.labels(model, version, self.protocol)
            self._latency[(model, version)] = latency
        latency.observe(seconds)
        count = self._counts.get((model, version, code))
        if count is None:
            count = REQUESTS.labels(model, version, self.protocol, str(code))
            self._counts[(model, version, code)] = count
        count.inc()


def exposition(multiproc_dir: Path | None = None) -> tuple[bytes, str]:
    """The text a Prometheus scrape gets, and its content type.

    Without ``multiproc_dir`` it is this process's default registry (maas metrics and
    the process collector's CPU, memory and file descriptors). With it, the maas
    metrics are the sum of every process's files there, and the process metrics are
    those of the process that answers the scrape (prometheus_client cannot merge them).
    """
    if multiproc_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    # prometheus_client leaves this constructor unannotated.
    multiprocess.MultiProcessCollector(registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    ProcessCollector(registry=registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
