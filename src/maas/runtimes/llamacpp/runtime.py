"""``LlamaCppRuntime``: a GGUF language model served by llama.cpp on its quantized weights.

The weights are memory-mapped as they are (a Q4 model stays Q4: a fraction of the
float32 size, and loading takes a second), and every sequence of the deployment runs in
one llama.cpp context (``LlamaDecodeBatch``), driven by serving's scheduler like any
``TextGenerator``. llama-cpp-python's low-level bindings (ctypes) release the GIL in
every call, so the scheduler's thread and the event loop run side by side.

Threads follow the CPUs this process may run on (``sched_getaffinity``): llama.cpp's
threads spin at each barrier, and two of them sharing a core slow it down several times.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import InvalidInput, UnsupportedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime, texts_of
from maas.runtimes.generation import (
    ChatMessage,
    OutputFormat,
    TokenConstraint,
    greedy_completion,
)
from maas.runtimes.llamacpp.batch import LlamaContext, LlamaDecodeBatch

__all__ = ["LlamaCppRuntime", "available_cpus"]

log = logging.getLogger("maas.runtimes")

SIGNATURE = Signature(
    inputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
    outputs=[TensorSpec(name="text", datatype="BYTES", shape=[-1])],
)
#: Tokens ``predict`` generates per text (the OpenAI routes take ``max_tokens``).
PREDICT_MAX_TOKENS = 64
#: Tokens one ``llama_decode`` takes: decode tokens plus a chunk of prompt.
N_BATCH = 512
#: KV cache of a deployment when the operator sets none, all its sequences together
#: (1,024 tokens each of the default 16 sequences; 377 MiB for SmolLM2-135M).
DEFAULT_KV_TOKENS = 16384
#: KV cache of the throw-away instance that reads a pushed file's details.
_INSPECT_KV_TOKENS = 256

_backend_lock = threading.Lock()
_backend_ready = False
_LOG_ERROR = 4  # GGML_LOG_LEVEL_ERROR


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _on_log(level: int, text: bytes, _: Any) -> None:
    if level == _LOG_ERROR:
        log.error("llama.cpp: %s", text.decode(errors="replace").rstrip())


def _bindings() -> Any:
    """The bindings, with the backend initialised once and llama.cpp's chatter (model
    metadata, tensor lists) kept out of the server's logs; errors still reach them."""
    global _backend_ready, _log_callback
    import llama_cpp

    with _backend_lock:
        if not _backend_ready:
            _log_callback = llama_cpp.llama_log_callback(_on_log)
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


_log_callback: Any = None  # held: llama.cpp keeps the pointer


class LlamaCppRuntime(Runtime):
    framework: ClassVar[str] = "llama.cpp"
    releases_gil: ClassVar[bool] = True
    in_process_only: ClassVar[bool] = True
    generates: ClassVar[bool] = True
    task = "text-generation"

    def __init__(self, lib: Any, model: Any, path: Path, options: LoadOptions) -> None:
        self._lib = lib
        self._model = model
        self.path = path
        self.signature = SIGNATURE
        self._vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        trained = int(lib.llama_model_n_ctx_train(model))
        slots = max(1, options.sequences)
        capacity = options.kv_cache_tokens or min(DEFAULT_KV_TOKENS, trained * slots)
        self.threads = options.threads or available_cpus()
        self._context = self._new_context(capacity, slots)
        self.context_length = min(trained, self._context.n_ctx_seq)
        self.stop_token_ids = frozenset(
            token for token in range(self.n_vocab) if lib.llama_vocab_is_eog(self._vocab, token)
        )
        if not self.stop_token_ids:
            raise InvalidInput("the model names no end-of-generation token")
        template = lib.llama_model_chat_template(model, None)
        self._template = template.decode() if template else None
        self._formatter: Any = None
        self._batch: LlamaDecodeBatch | None = None

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        """A GGUF file, where llama.cpp is installed (else transformers takes it)."""
        return head[:4] == b"GGUF" and importlib.util.find_spec("llama_cpp") is not None

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        # A small context: inspecting needs the model's description, not its cache.
        runtime = cls.load(
            path, options=replace(options, kv_cache_tokens=_INSPECT_KV_TOKENS, sequences=1)
        )
        try:
            details = {"format": "gguf", "task": runtime.task, **runtime.details}
            return ArtifactInfo(cls.framework, runtime.signature, runtime.task, details)
        finally:
            runtime.close()

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        lib = _bindings()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        params.use_mmap = True
        # No repacking of the weights into CPU-specific layouts: on an AMX machine it
        # took ten seconds of every load (the cold start), and its q4_1 kernels crashed.
        params.use_extra_bufts = False
        model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise UnsupportedArtifact("llama.cpp cannot load this GGUF file")
        try:
            return cls(lib, model, path, options)
        except BaseException:
            lib.llama_model_free(model)
            raise

    def _new_context(self, n_ctx: int, slots: int) -> LlamaContext:
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = self.threads
        # A cache per sequence, not llama.cpp's unified one. In a unified cache a
        # sequence's cells land wherever others left room, so the order of the sums over
        # them changes with the load, and a Q4 model's quantized activations turn those
        # last-bit changes into logits up to 1.0 apart: the same greedy request answered
        # differently when others ran. With a cache each, a sequence gets exactly the
        # logits it gets alone, whoever shares its steps (the price: each sequence has
        # ``n_ctx / slots`` tokens, as in llama-server with ``-np``).
        params.kv_unified = False
        # Flash attention: with a cache per sequence it, too, gives each sequence exactly
        # its own logits (measured: identical alone and beside others), and it decodes
        # 12-17% faster here. (Beside the unified cache it did not: up to 0.8 apart.)
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise UnsupportedArtifact(f"llama.cpp could not create a context of {n_ctx} tokens")
        return LlamaContext(lib, ctx, n_batch=N_BATCH, slots=slots, n_vocab=self.n_vocab)

    def close(self) -> None:
        if self._model is not None:
            self._context.close()
            self._lib.llama_model_free(self._model)
            self._model = None

    @property
    def details(self) -> dict[str, Any]:
        """What the registry records about the model at push time."""
        buffer = ctypes.create_string_buffer(256)
        self._lib.llama_model_desc(self._model, buffer, len(buffer))
        return {
            "architecture": self._meta("general.architecture") or "?",
            "description": buffer.value.decode(errors="replace"),
            "parameters": int(self._lib.llama_model_n_params(self._model)),
            "context_length": int(self._lib.llama_model_n_ctx_train(self._model)),
            "chat_template": self._template is not None,
        }

    def _meta(self, key: str) -> str | None:
        buffer = ctypes.create_string_buffer(256)
        size = self._lib.llama_model_meta_val_str(self._model, key.encode(), buffer, len(buffer))
        return buffer.value.decode(errors="replace") if size >= 0 else None

    # -- TextGenerator -----------------------------------------------------------------

    def encode_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self._template is None:  # plain "role: content" lines
            lines = [f"{m['role']}: {m['content']}" for m in conversation]
            return self.encode_text("\n".join([*lines, "assistant:"]))
        try:
            text = self._chat_formatter()(messages=conversation).prompt
        except Exception as exc:  # the template's own raise_exception, or a bad template
            raise InvalidInput(f"the model's chat template refused the messages: {exc}") from None
        # The template writes the special tokens (BOS included, if the model wants one).
        return self._tokenize(text, add_special=False, parse_special=True)

    def _chat_formatter(self) -> Any:
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                self._template or "",
                eos_token=self._token_text(self._lib.llama_vocab_eos(self._vocab)),
                bos_token=self._token_text(self._lib.llama_vocab_bos(self._vocab)),
            )
        return self._formatter

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = self._lib.llama_vocab_get_text(self._vocab, token)
        return text.decode(errors="replace") if text else ""

    def encode_text(self, text: str) -> list[int]:
        return self._tokenize(text, add_special=True, parse_special=False)

    def _tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        for _ in range(2):
            buffer = (ctypes.c_int32 * size)()
            count = self._lib.llama_tokenize(
                self._vocab, data, len(data), buffer, size, add_special, parse_special
            )
            if count >= 0:
                return list(buffer[:count])
            size = -count
        raise InvalidInput("the text could not be tokenized")

    def decode(self, tokens: Sequence[int]) -> str:
        if not tokens:
            return ""
        ids = (ctypes.c_int32 * len(tokens))(*tokens)
        size = 8 * len(tokens) + 16
        for _ in range(2):
            buffer = ctypes.create_string_buffer(size)
            count = self._lib.llama_detokenize(
                self._vocab, ids, len(tokens), buffer, size, False, False
            )
            if count >= 0:
                return buffer.raw[:count].decode("utf-8", errors="replace")
            size = -count
        return ""

    def new_batch(self) -> LlamaDecodeBatch:
        """The batch over the deployment's one context; a new one starts from an empty
        cache (the scheduler asks for one after a failed step)."""
        self._batch = LlamaDecodeBatch(self._context)
        return self._batch

    # -- ConstrainedGenerator ----------------------------------------------------------

    def constraint(self, output: OutputFormat) -> TokenConstraint:
        from maas.runtimes.llamacpp.grammar import GrammarConstraint

        return GrammarConstraint.compile(self._lib, self._vocab, self.n_vocab, output)

    # -- V2 predict (no scheduler: warm-up, jobs) --------------------------------------

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        texts = texts_of(inputs["text"])
        answers = [
            greedy_completion(self, self.encode_text(text), PREDICT_MAX_TOKENS) for text in texts
        ]
        return {"text": np.array([a.encode() for a in answers], dtype=object)}
