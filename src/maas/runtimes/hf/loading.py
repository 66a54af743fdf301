"""From an artifact to a loadable transformers model directory, and what it is for.

An artifact is a model directory (unpacked by serving from an uploaded tar or zip) or a
single GGUF file. Loading never runs code from the artifact: weights must be
safetensors (``.bin`` pickles are refused), GGUF is parsed by the ``gguf`` package, and
``trust_remote_code`` is never set, so an architecture transformers does not ship is
refused rather than fetched.

GGUF files are dequantized by transformers on every load (tens of seconds for a small
model), so the first load writes the dequantized weights as safetensors to a cache
directory keyed by the file's digest, and later loads take under a second. The
conversion itself reads the file once (``_gguf_read_once``), where transformers alone
reads it three times.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from maas.errors import UnsupportedArtifact
from maas.protocols.management import DeploymentSpec

__all__ = [
    "EMBEDDINGS",
    "EMBEDDINGS_BATCHED",
    "TEXT_CLASSIFICATION",
    "TEXT_GENERATION",
    "detect_task",
    "gguf_cache_source",
    "is_gguf",
    "is_model_dir",
    "model_dir_for",
    "read_json",
]

log = logging.getLogger("maas.runtimes")

TEXT_GENERATION = "text-generation"
TEXT_CLASSIFICATION = "text-classification"
EMBEDDINGS = "embeddings"

#: Embedding calls are many small batches of texts: batch them by default.
EMBEDDINGS_BATCHED = DeploymentSpec(max_batch_size=64, max_queue_delay_us=2000)

_GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == _GGUF_MAGIC


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedArtifact(f"{path.name} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UnsupportedArtifact(f"{path.name} is not a JSON object")
    return data


def detect_task(model_dir: Path) -> str:
    """Text generation, classification or embeddings, from the directory's own config.

    Sentence-transformers layouts (``modules.json``) are embedders; otherwise the
    architecture name decides (``…ForCausalLM``, ``…ForSequenceClassification``), and a
    bare encoder (``BertModel``) is an embedder with mean pooling.
    """
    if (model_dir / "modules.json").is_file():
        return EMBEDDINGS
    config = read_json(model_dir / "config.json")
    architectures = config.get("architectures") or []
    names = [str(name) for name in architectures]
    if any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in names):
        return TEXT_GENERATION
    if any(name.endswith("ForSequenceClassification") for name in names):
        return TEXT_CLASSIFICATION
    if any(name.endswith("Model") for name in names):
        return EMBEDDINGS
    raise UnsupportedArtifact(
        f"model directory with architectures {names or 'none'}: maas serves causal LMs, "
        "sequence classifiers and sentence embedders"
    )


def check_safe_weights(model_dir: Path) -> None:
    """Weights must be safetensors: ``pytorch_model.bin`` is a pickle and runs code.
    Each one's header is read here, so a damaged file is a 400, not a 500 at load."""
    weights = sorted(model_dir.glob("*.safetensors"))
    for path in weights:
        _check_safetensors_header(path)
    if weights:
        return
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise UnsupportedArtifact(
            "the model directory holds only pickled weights (.bin/.pt), which run code when "
            "loaded; save it with safetensors (save_pretrained(safe_serialization=True))"
        )
    raise UnsupportedArtifact("the model directory holds no weights (*.safetensors)")


def _check_safetensors_header(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except SafetensorError as exc:
        raise UnsupportedArtifact(
            f"{path.name} is not a valid safetensors file ({exc})",
            details={"file": path.name},
        ) from None


def _gguf_key(path: Path) -> str:
    """The cache key of a GGUF file: its content digest where the store named it so
    (``sha256/ab/<hex>``), else a hash of its path, size and time."""
    name = path.name
    if len(name) >= 62 and all(c in "0123456789abcdef" for c in name):
        return path.parent.name + name
    stat = path.stat()
    return hashlib.sha256(
        f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()


def gguf_cache_source(key: str) -> str | None:
    """The digest of the store blob the cache entry ``gguf/<key>`` was converted from
    (``_gguf_key`` of ``sha256/ab/<hex>`` is ``ab<hex>``), or ``None`` for one keyed by
    a path outside the store."""
    hex_digest = key[2:]
    if len(key) == 66 and key[:2] == hex_digest[:2] and _is_hex(hex_digest):
        return f"sha256:{hex_digest}"
    return None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def model_dir_for(path: Path, cache_dir: Path | None) -> Path:
    """A directory ``from_pretrained`` can load: ``path`` itself, or the cached
    conversion of a GGUF file (made now if missing, atomically)."""
    if is_model_dir(path):
        check_safe_weights(path)
        return path
    if not is_gguf(path):
        raise UnsupportedArtifact("expected a transformers model directory or a GGUF file")
    root = cache_dir or Path(tempfile.gettempdir()) / "maas-cache"
    target = root / "gguf" / _gguf_key(path)
    if is_model_dir(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        _convert_gguf(path, temp)
        os.replace(temp, target)
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
        if not is_model_dir(target):  # another process did not win the race either
            raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def _convert_gguf(path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    log.info("dequantizing %s once into %s", path.name, out)
    directory, filename = str(path.parent), path.name
    try:
        with _gguf_read_once():
            tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
            model: Any = AutoModelForCausalLM.from_pretrained(
                directory, gguf_file=filename, dtype=torch.float32, trust_remote_code=False
            )
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise UnsupportedArtifact(f"this GGUF file cannot be loaded: {exc}") from None
    # The dequantized model is plain float32; drop the GGUF marker that blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


_GGUF_PATCH = threading.Lock()


@contextmanager
def _gguf_read_once() -> Iterator[None]:
    """While it is open, ``gguf.GGUFReader`` returns one reader per file and
    ``gguf.get_tensor_name_map`` one map per architecture and depth.

    Why: transformers parses the whole file (the tokenizer's 49k-entry vocabulary
    included) three times for one load (config, tokenizer, weights), and builds the
    tensor name map again for every module of the model: half of the 20 CPU-s a
    135M model's conversion took (9.5 with this). Both are pure reads of the file and
    of tables, and transformers imports both names from ``gguf`` at each call, so
    replacing them for the conversion changes what it gets in no way but time. The lock
    keeps two conversions from restoring each other's replacements.
    """
    import gguf

    with _GGUF_PATCH:
        reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        readers: dict[tuple[str, str], Any] = {}

        def read_once(path: str | os.PathLike[str], mode: str = "r") -> Any:
            key = (os.fspath(path), mode)
            if key not in readers:
                readers[key] = reader(path, mode)  # type: ignore[arg-type]
            return readers[key]

        gguf.GGUFReader = read_once  # type: ignore[misc,assignment]
        gguf.get_tensor_name_map = functools.cache(name_map)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map  # type: ignore[misc]
