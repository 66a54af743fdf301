"""``TransformersRuntime``: the catalog's entry for every transformers model.

One framework name (``transformers``) covers model directories and GGUF files; the
task, read from the model's own config at load time, picks the class that serves it.
torch releases the GIL in its kernels, so these run in threads.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar, Self

from maas.errors import UnsupportedArtifact
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime
from maas.runtimes.hf.loading import (
    EMBEDDINGS,
    EMBEDDINGS_BATCHED,
    TEXT_CLASSIFICATION,
    TEXT_GENERATION,
    detect_task,
    model_dir_for,
)
from maas.runtimes.importing import FRAMEWORK_IMPORT

__all__ = ["TransformersRuntime", "prepare_torch"]


def prepare_torch(options: LoadOptions) -> None:
    """Process-wide torch settings a server wants: inference only, bounded threads."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # logs are no tty
    torch.set_grad_enabled(False)
    if options.threads is not None:
        torch.set_num_threads(options.threads)


class TransformersRuntime(Runtime):
    framework: ClassVar[str] = "transformers"
    releases_gil: ClassVar[bool] = True
    in_process_only: ClassVar[bool] = True
    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx", "quantize_int8", "prune")
    job_loadable: ClassVar[bool] = True
    quantizations: ClassVar[tuple[str, ...]] = ("int8",)
    #: Whether the runtime generates text token by token (serving then schedules it).
    generates: ClassVar[bool] = False

    task: str
    model_dir: Path

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        # Under the lock the torch and keras runtimes import under: two threads importing
        # torch at once (a transformers load beside a PyTorch push) break its import.
        with FRAMEWORK_IMPORT:
            return cls._load(path, options)

    @classmethod
    def _load(cls, path: Path, options: LoadOptions) -> Self:
        model_dir = model_dir_for(path, options.cache_dir)
        task = detect_task(model_dir)
        prepare_torch(options)
        if cls is not TransformersRuntime:
            return cls._load_dir(model_dir, options)
        runtime: Runtime
        if task == TEXT_GENERATION:
            from maas.runtimes.hf.generator import CausalLMRuntime

            runtime = CausalLMRuntime._load_dir(model_dir, options)
        elif task == TEXT_CLASSIFICATION:
            from maas.runtimes.hf.classifier import TextClassifierRuntime

            runtime = TextClassifierRuntime._load_dir(model_dir, options)
        else:
            assert task == EMBEDDINGS
            from maas.runtimes.hf.embedder import EmbeddingRuntime

            runtime = EmbeddingRuntime._load_dir(model_dir, options)
        return runtime  # type: ignore[return-value]  # a subclass of cls

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        """A directory (a packed model) or a GGUF file; a directory that is not a
        transformers model is refused by ``inspect``, with the reason."""
        return path.is_dir() or head[:4] == b"GGUF"

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        if path.is_dir() and not (path / "config.json").is_file():
            raise UnsupportedArtifact(
                "the archive holds no config.json at its root: pack a transformers model "
                "directory (save_pretrained) or upload a single model file"
            )
        runtime = TransformersRuntime.load(path, options=options)
        try:
            details = {"format": "gguf" if path.is_file() else "directory", "task": runtime.task}
            details.update(runtime.details)
            deployment = EMBEDDINGS_BATCHED if runtime.task == EMBEDDINGS else None
            return ArtifactInfo(cls.framework, runtime.signature, runtime.task, details, deployment)
        finally:
            runtime.close()

    @property
    def details(self) -> dict[str, Any]:
        """What the registry records about the model at push time."""
        return {}

    @classmethod
    def _load_dir(cls, model_dir: Path, options: LoadOptions) -> Self:
        raise NotImplementedError  # each task's class loads its own

    @staticmethod
    def _pretrained(
        model_dir: Path, auto_class: str, options: LoadOptions | None = None
    ) -> tuple[Any, Any]:
        """(model in eval mode, tokenizer) of a directory, the safe way: safetensors
        only, float32, never code from the directory; with ``quantize="int8"``, its
        linear layers made dynamic int8."""
        import torch
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        model = getattr(transformers, auto_class).from_pretrained(
            model_dir, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
        )
        model.eval()
        if options is not None and options.quantize == "int8":
            model = quantize_int8(model)
        return model, tokenizer


def quantize_int8(model: Any) -> Any:
    """The model with every ``nn.Linear`` replaced by a dynamic int8 one (int8 weights
    made once, activations quantized per call, fbgemm/oneDNN kernels): the decoding of a
    small language model is bound by reading float32 weights, and int8 reads a quarter.
    An untied embedding stays float32; a tied output head (its weights are the
    embedding's) is quantized as a copy, the embedding itself untouched."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    # A scale per output channel, not per tensor: measured on SmolLM2-135M, float32's
    # token at 72% of steps instead of 63% (benchmarks/llm_int8.py).
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
