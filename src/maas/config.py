"""Settings: read once at an entry point, then passed down by section.

Environment variables use the prefix ``MAAS_``; sections are set as
``MAAS_SECTION__FIELD`` (for example ``MAAS_SERVING__MAX_LOADED_MODELS=8``). The few
knobs users set most stay flat: ``MAAS_HOME``, ``MAAS_DATABASE_URL``, ``MAAS_HOST``,
``MAAS_PORT``. CLI flags override the environment by being passed to ``Settings(...)``.
Nothing below ``maas.config`` reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AudioSettings",
    "AuthSettings",
    "ClusterSettings",
    "GenerationSettings",
    "JobsSettings",
    "LimitSettings",
    "ServerSettings",
    "ServingSettings",
    "Settings",
    "StorageSettings",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServingSettings(_Section):
    max_loaded_models: int = Field(
        16, ge=1, description="Loaded model versions kept before the least recently used unloads."
    )
    load_at_start: bool = Field(
        True, description="Load every aliased version when the server starts."
    )
    inference_threads: int = Field(
        4, ge=1, description="Threads that run model calls off the event loop."
    )
    runtime_threads: int | None = Field(
        None,
        ge=1,
        description="Threads one model call may use inside its runtime (llama.cpp, ONNX "
        "Runtime, PyTorch, XGBoost, LightGBM, Whisper); unset: the CPUs this process may run "
        "on. Lower it where other processes share those CPUs: llama.cpp's and ONNX Runtime's "
        "threads spin while they wait for each other, and on a busy CPU that spinning costs "
        "more than the threads give.",
    )
    trust_pickle: bool = Field(
        False, description="Accept pickle/joblib artifacts, which run code when loaded."
    )
    worker_mode: Literal["auto", "threads", "inline", "processes", "shared"] = Field(
        "auto",
        description="Where models run: auto picks threads for runtimes that release the GIL "
        "(ONNX), the shared worker pool for small models of the rest (scikit-learn, up to "
        "shared_max_bytes, one instance) and worker processes of their own for larger ones; "
        "threads, inline (on the event loop), processes or shared put every model there.",
    )
    shared_workers: int = Field(
        1,
        ge=0,
        description="Worker processes of the pool that small scikit-learn models share (each "
        "holds every such model); 0: every model gets processes of its own.",
    )
    shared_max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="Largest artifact that auto places in the shared worker pool.",
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="Inference timeout when the caller sets none (504 past it)."
    )
    max_request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Largest timeout a caller may ask for (parameters.timeout or X-Maas-Timeout); "
        "a larger one is served with this cap.",
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="After SIGTERM, the most time until the process exits: in-flight requests "
        "finish, usage records flush, models unload; past it the rest is cut (worker "
        "processes killed). Requests get all of it but a teardown share (a fifth, at most 5 s).",
    )
    drain_grace_s: float = Field(
        2.0,
        ge=0,
        description="After SIGTERM (not Ctrl-C), how long the listener stays open answering 503 "
        "(readiness, new inference) before it closes, so load balancers see the drain; part of "
        "drain_timeout_s.",
    )
    worker_restart_backoff_s: float = Field(
        0.1,
        gt=0,
        description="Delay before restarting a dead worker process; it doubles with each "
        "consecutive death, up to worker_restart_backoff_max_s.",
    )
    worker_restart_backoff_max_s: float = Field(
        10.0, gt=0, description="Longest delay before restarting a dead worker process."
    )
    changes_poll_s: float = Field(
        0.25,
        gt=0,
        description="How often the server reads the registry's change feed, which brings the "
        "changes other servers of the database made (alias moves, deployment changes, "
        "deletions, key revocations).",
    )
    changes_retention_s: float = Field(
        3600.0,
        gt=0,
        description="How long change feed rows are kept; a server that could not read the "
        "feed for longer resynchronises from the registry.",
    )


class GenerationSettings(_Section):
    """Continuous batching of text generation, per deployed language model."""

    max_running: int = Field(
        16, ge=1, description="Sequences that share each forward pass (the running batch)."
    )
    max_waiting: int = Field(
        64, ge=0, description="Sequences queued to join the batch (429 past it)."
    )
    max_context_tokens: int | None = Field(
        None, ge=16, description="Cap on prompt plus completion tokens; default the model's."
    )
    default_max_tokens: int = Field(
        512, ge=1, description="Completion tokens when the caller sets no max_tokens."
    )
    kv_cache_tokens: int | None = Field(
        None,
        ge=64,
        description="KV cache of a GGUF model on llama.cpp, in tokens, split evenly among "
        "its max_running sequences: each sequence's prompt plus completion must fit in its "
        "share (a longer one is a 400 context_length_exceeded). Default 16384 (1,024 "
        "tokens each for the default 16 sequences); raise it, or lower max_running, for longer "
        "conversations.",
    )


class StorageSettings(_Section):
    artifact_url: str | None = Field(
        None, description="fsspec URL of the artifact store; default MAAS_HOME/artifacts."
    )
    gc_grace_s: float = Field(
        3600.0,
        ge=0,
        description="Blobs no version, dataset or job references are deleted by the garbage "
        "collector only once unchanged this long: a push writes its blob before it inspects "
        "and records it. Keep it longer than the slowest push's inspection.",
    )
    gc_interval_s: float = Field(
        6 * 3600.0,
        ge=0,
        description="How often the server collects unreferenced blobs and their derived "
        "cache directories (0: never; `maas gc` still does). The first pass runs a minute "
        "after start; one server of a shared database acts at a time.",
    )


class LimitSettings(_Section):
    max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest inference request body (413 past it)."
    )
    max_upload_bytes: int = Field(
        50 * 1024**3, ge=1024, description="Largest artifact upload (413 past it)."
    )
    max_extract_bytes: int = Field(
        20 * 1024**3,
        ge=1024,
        description="Largest total size an uploaded archive (zip, tar) may unpack to (413 past "
        "it), whatever its own size; raise it for model directories larger than 20 GiB.",
    )
    max_extract_ratio: float = Field(
        20.0,
        ge=1.0,
        description="Most times its own size an uploaded archive may unpack to (413 past it): "
        "model weights barely compress, a zip bomb compresses a thousandfold.",
    )
    max_archive_members: int = Field(
        10_000, ge=1, description="Most files and directories an uploaded archive may hold."
    )
    max_json_depth: int = Field(32, ge=2, description="Deepest JSON nesting accepted.")
    max_tensor_elements: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest element count of one input tensor."
    )
    max_bytes_element: int = Field(
        1024 * 1024, ge=1, description="Longest single element of a BYTES tensor."
    )
    max_image_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest encoded image an image model takes (413 past it); a V2 BYTES "
        "element is also bounded by max_bytes_element.",
    )
    max_image_pixels: int = Field(
        25_000_000,
        ge=1,
        description="Most pixels an image's header may declare (413 past it, before decoding: "
        "a decompression bomb is a small file of a huge image).",
    )
    request_deadline_s: float = Field(
        300.0,
        gt=0,
        description="Time a non-streaming request may take to start its answer (504 past it); "
        "uploads are exempt.",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request head (request line and headers)."
    )
    max_rerank_documents: int = Field(
        1000, ge=1, description="Most documents one rerank request may rank (400 past it)."
    )


class AudioSettings(_Section):
    """Speech to text: what one upload may be. Text to speech has its limits in the
    voice model's own file (input length, synthesis timeout)."""

    max_upload_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1024,
        description="Largest audio file a transcription or translation takes (413 "
        "payload_too_large past it; OpenAI's limit is the same 25 MiB).",
    )
    max_duration_s: float = Field(
        120.0,
        gt=0,
        description="Longest audio a transcription or translation takes, in seconds (413 "
        "audio_too_long past it, found while decoding, before the model runs). Whisper "
        "tiny.en takes about 0.4 s per second of audio on 2 busy cores, so 120 s fits the "
        "default 60 s request timeout; raise both (X-Maas-Timeout) for longer audio.",
    )


class AuthSettings(_Section):
    enabled: bool = Field(True, description="Require an API key on every non-health endpoint.")
    admin_key: SecretStr | None = Field(None, description="Admin key to create at start.")
    metrics_public: bool = Field(
        False,
        description="Serve /metrics without a key. Off by default: the metrics name every "
        "model and version; scrape with a key of role metrics (or admin).",
    )
    docs_public: bool = Field(
        True,
        description="Serve the OpenAPI document (/openapi.json) without a key; the /docs and "
        "/console pages are always public and call the API with the key typed into them.",
    )
    hash_secret: SecretStr | None = Field(
        None,
        description="Secret that keys are hashed with (HMAC-SHA256); default a random one kept "
        "in MAAS_HOME/auth.secret. Replicas sharing a database must share it.",
    )


class JobsSettings(_Section):
    enabled: bool = Field(
        True,
        description="Run the embedded job worker pool in this server; several servers of one "
        "database may (each job runs on the one that claims it), the others only queue jobs "
        "and show them.",
    )
    max_concurrent: int = Field(1, ge=1, description="Jobs that run at the same time.")
    threads_per_job: int = Field(
        1, ge=1, description="CPU threads of each job process (torch, BLAS, onnxruntime)."
    )
    requeue_interrupted: bool = Field(
        True,
        description="A job interrupted by a server stop or crash is queued again (else failed).",
    )
    max_attempts: int = Field(
        2, ge=1, description="Starts a job may have before an interruption fails it."
    )
    cancel_grace_s: float = Field(
        3.0, ge=0, description="After SIGTERM, how long a cancelled job has before SIGKILL."
    )
    runner_stale_s: float = Field(
        30.0,
        ge=1.0,
        description="A running job whose server sent no heartbeat for this long is settled "
        "(re-queued or failed) by another server of the database; its own server beats "
        "every sixth of it and checks others every third.",
    )
    memory_bytes: int | None = Field(
        None,
        ge=1,
        description="Memory each job asks of a Ray cluster (with `cluster.ray_address`; its "
        "CPUs are threads_per_job); unset, Ray reserves none.",
    )
    max_dataset_bytes: int = Field(
        2 * 1024**3, ge=1024, description="Largest dataset upload (413 past it)."
    )
    max_quality_drop: float = Field(
        0.02,
        ge=0,
        description="Largest quality drop an optimized version may show and still be promoted "
        "without force.",
    )


class ClusterSettings(_Section):
    """Model replicas on a Ray cluster: when one machine is not enough."""

    ray_address: str | None = Field(
        None,
        description="Address of a running Ray cluster (`ray start --head` prints it, e.g. "
        "10.0.0.1:6380); set, every model runs as Ray actors placed on its nodes, language "
        "models with their schedulers (needs the [ray] extra and the artifact store reachable "
        "from every node).",
    )
    ready_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a model's replicas may take to be placed and loaded on the "
        "cluster before the load fails with 503 placement_infeasible.",
    )
    max_restarts: int = Field(
        -1,
        ge=-1,
        description="Times Ray restarts a replica that died (-1: always); the calls it held "
        "are retried once on another replica meanwhile.",
    )
    health_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often the server asks each replica whether it lives (readiness "
        "and the deployment's pids follow).",
    )
    orphan_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A replica that no server has pinged for this long removes itself: "
        "replicas are shared by the servers of a cluster and outlive the one that created "
        "them, so the last server's going is what ends them. More than health_interval_s.",
    )
    replica_base_memory_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Memory a replica asks beyond twice its artifact's size when its "
        "deployment sets no memory_bytes, so that Ray packs nodes by memory, not by count "
        "(a Ray worker process with maas and scikit-learn loaded measured 150 MB PSS).",
    )


class ServerSettings(_Section):
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins browsers may call from (CORS off when empty)."
    )
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM); serves https.")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM).")
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the KServe V2 gRPC service on the same host (0: any free; "
        "unset: no gRPC). Same keys, limits and metering as REST; TLS as REST's.",
    )


class Settings(BaseSettings):
    """Every setting of the server and the CLI, frozen once built."""

    model_config = SettingsConfigDict(
        env_prefix="MAAS_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    home: Path = Field(Path("~/.maas"), description="Directory of the embedded database and store.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default SQLite (WAL) at MAAS_HOME/maas.db."
    )
    host: str = Field("127.0.0.1", description="Address the server binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port the server binds (0: any free).")
    url: str = Field("http://127.0.0.1:8000", description="Server URL the CLI and SDK call.")
    api_key: SecretStr | None = Field(None, description="API key the CLI sends.")
    admin_key: SecretStr | None = Field(
        None, description="Shortcut for auth.admin_key (MAAS_ADMIN_KEY)."
    )
    redis_url: str | None = Field(None, description="Redis for limits shared across processes.")
    redis_prefix: str = Field(
        "maas", description="Prefix of every Redis key; servers sharing limits use the same one."
    )
    log_level: str = Field("info", description="Log level of the server.")
    prometheus_multiproc_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("prometheus_multiproc_dir", "PROMETHEUS_MULTIPROC_DIR"),
        description="prometheus_client's multiprocess directory (env PROMETHEUS_MULTIPROC_DIR, "
        "unprefixed); /metrics then sums every process's values.",
    )
    demo: bool = Field(False, description="Register the demo models at start.")
    demo_models: list[str] | None = Field(
        None,
        description="Which demo models to register (JSON list, e.g. '[\"iris\"]'); "
        "default every one whose packages are installed.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Derived files that can be rebuilt from artifacts (unpacked model "
        "directories, dequantized GGUF weights); default MAAS_HOME/cache. Servers may share it.",
    )

    serving: ServingSettings = ServingSettings()
    generation: GenerationSettings = GenerationSettings()
    storage: StorageSettings = StorageSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()
    server: ServerSettings = ServerSettings()
    jobs: JobsSettings = JobsSettings()
    audio: AudioSettings = AudioSettings()
    cluster: ClusterSettings = ClusterSettings()

    @model_validator(mode="before")
    @classmethod
    def _admin_key_shortcut(cls, data: Any) -> Any:
        """``MAAS_ADMIN_KEY`` fills ``auth.admin_key`` unless that is set itself."""
        if not isinstance(data, dict) or not data.get("admin_key"):
            return data
        auth = data.get("auth") or {}
        if isinstance(auth, BaseModel):
            auth = auth.model_dump()
        if isinstance(auth, dict) and not auth.get("admin_key"):
            data = {**data, "auth": {**auth, "admin_key": data["admin_key"]}}
        return data

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def cache_path(self) -> Path:
        """Derived files (unpacked archives, dequantized GGUF weights): rebuilt if lost."""
        return (self.cache_dir or self.home_dir / "cache").expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'maas.db'}"

    @property
    def resolved_artifact_url(self) -> str:
        return self.storage.artifact_url or str(self.home_dir / "artifacts")
