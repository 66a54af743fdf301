"""The demo models: an iris classifier as ``.skops`` and as ONNX, trained at first start.

Trained in a few milliseconds from the iris data scikit-learn ships, so the demo needs
no download. Registered through the ``Publisher`` like any upload, so the demo shows
the real path a model takes.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from maas.auth.bootstrap import AdminKeyNotice
from maas.errors import ModelNotFound
from maas.registry.service import RegistryService
from maas.services.publishing import Publisher

__all__ = ["DEMO_MODELS", "demo_banner", "register_demo_models"]

log = logging.getLogger("maas.demo")

DEMO_MODELS = ("iris", "iris-onnx")


def _train_iris(directory: Path) -> dict[str, Path]:
    """Fit the iris classifier and save it as .skops and, when skl2onnx is there, .onnx."""
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    files = {"iris": directory / "iris.skops"}
    skops.io.dump(model, files["iris"])
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


def _missing(registry: RegistryService) -> list[str]:
    missing = []
    for name in DEMO_MODELS:
        try:
            registry.get_model(name)
        except ModelNotFound:
            missing.append(name)
    return missing


async def register_demo_models(publisher: Publisher, registry: RegistryService, home: Path) -> None:
    """Register the demo models once; later starts find them in the registry."""
    missing = await asyncio.to_thread(_missing, registry)
    if not missing:
        return
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        files = await asyncio.to_thread(_train_iris, Path(tmp))
        for name in missing:
            if name in files:
                await publisher.publish_file(
                    name,
                    files[name],
                    alias="production",
                    description="Iris species from sepal and petal sizes (maas demo).",
                    lineage={"source": "maas demo", "dataset": "sklearn.datasets.load_iris"},
                )
                log.info("registered demo model %s", name)


def demo_banner(url: str, admin_key: AdminKeyNotice | None = None) -> str:
    """Copy-paste commands that work as printed: with the key, or reading it from its file."""
    key, key_expr = _key_of(admin_key)
    header = f' -H "Authorization: Bearer {key}"' if key else ""
    api_key = f", api_key={key_expr}" if key_expr else ""
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
