"""Images in, model tensors out: decoding under limits, and declared preprocessing.

An image model takes encoded images (JPEG, PNG, WebP) as BYTES; this module turns one
into the float tensor its ONNX graph wants, as the model's ``Preprocessing`` declares:
resize (the shorter side, keeping the aspect ratio, or straight to the crop), center
crop, ``pixel * scale``, ``(x - mean) / std`` per channel, channel order and layout.

Decoding is bounded before it starts: the encoded size is checked first, then the pixel
count the header declares (Pillow reads only the header on ``open``), so a small file
that declares a huge image (a decompression bomb) is refused without allocating it. A
JPEG is decoded at the smallest DCT scale that still covers the resize (``draft``): a
12-megapixel photo shrunk to 256 pixels decodes at an eighth of its size. A photo's
EXIF orientation is applied, as image viewers do (phones store pictures sideways).

Pillow is imported on first use: the core server runs without the ``[vision]`` extra.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from maas.errors import ImageTooLarge, InvalidImage, UnsupportedArtifact
from maas.runtimes.base import ImageLimits

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["FORMATS", "Preprocessing", "decode_image", "image_bytes", "preprocess"]

#: What an image may be: Pillow's names of the formats it opens.
FORMATS = ("JPEG", "PNG", "WEBP")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_RESAMPLING = ("bilinear", "bicubic", "nearest")
_ORIENTATION = 0x0112  # the EXIF tag
#: EXIF orientation -> the ``Image.Transpose`` value that makes the picture upright.
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor (declared with the model).

    ``resize`` is the shorter side after resizing (then a center crop of ``crop``), or
    ``None`` to resize straight to ``crop``. ``mean`` and ``std`` apply after ``scale``,
    in the model's ``channels`` order.
    """

    crop: tuple[int, int]  # height, width
    resize: int | None = None
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: str = "RGB"
    layout: str = "NCHW"
    resample: str = "bilinear"

    @classmethod
    def from_json(cls, body: Any, where: str = "preprocessing") -> Preprocessing:
        """A declared preprocessing, checked; ``UnsupportedArtifact`` names what is wrong."""
        if not isinstance(body, dict):
            raise UnsupportedArtifact(f"{where} must be an object")
        try:
            spec = cls(
                crop=_pair(body.get("crop"), f"{where}.crop"),
                resize=_optional_size(body.get("resize"), f"{where}.resize"),
                scale=_number(body.get("scale", 1.0), f"{where}.scale"),
                mean=_triple(body.get("mean", [0.0, 0.0, 0.0]), f"{where}.mean"),
                std=_triple(body.get("std", [1.0, 1.0, 1.0]), f"{where}.std"),
                channels=_choice(body.get("channels", "RGB"), ("RGB", "BGR"), f"{where}.channels"),
                layout=_choice(body.get("layout", "NCHW"), ("NCHW", "NHWC"), f"{where}.layout"),
                resample=_choice(
                    body.get("resample", "bilinear"), _RESAMPLING, f"{where}.resample"
                ),
            )
        except (TypeError, ValueError) as exc:
            raise UnsupportedArtifact(str(exc)) from None
        if any(value == 0 for value in spec.std):
            raise UnsupportedArtifact(f"{where}.std must not be 0")
        if spec.resize is not None and spec.resize < min(spec.crop):
            raise UnsupportedArtifact(f"{where}.resize must be at least the crop's shorter side")
        return spec

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["crop"], body["mean"], body["std"] = list(self.crop), list(self.mean), list(self.std)
        return body

    @property
    def input_shape(self) -> list[int]:
        """The model input this produces for one image, batch axis first (-1)."""
        height, width = self.crop
        if self.layout == "NCHW":
            return [-1, 3, height, width]
        return [-1, height, width, 3]

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize, before the crop."""
        if self.resize is None:
            return self.crop[1], self.crop[0]
        short = min(width, height)
        # torchvision's Resize(int): the longer side scaled and truncated.
        if width <= height:
            return self.resize, max(int(self.resize * height / short), self.resize)
        return max(int(self.resize * width / short), self.resize), self.resize


def _pair(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8192 for v in value)
    ):
        raise ValueError(f"{where} must be a size or [height, width], 1 to 8192 pixels")
    return value[0], value[1]


def _optional_size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 8192:
        raise ValueError(f"{where} must be a size from 1 to 8192 pixels, or null")
    return value


def _number(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"{where} must be a number")
    return float(value)


def _triple(value: Any, where: str) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"{where} must be a list of 3 numbers, one per channel")
    first, second, third = (_number(v, where) for v in value)
    return first, second, third


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ValueError(f"{where} must be one of {', '.join(choices)}")
    return str(value)


def image_bytes(item: Any, limits: ImageLimits) -> bytes:
    """The encoded image of one BYTES element: raw bytes, or (as V2 JSON must carry
    binary data) base64 text, optionally a ``data:image/…;base64,`` URL."""
    if isinstance(item, str):
        item = item.encode()
    if not isinstance(item, bytes):
        raise InvalidImage("an image input takes BYTES, one encoded image per element")
    data: bytes = item
    if not data.startswith(_MAGIC) and not _is_webp(data):
        if data.startswith(b"data:"):
            data = data.partition(b",")[2]
        try:  # line breaks (``base64`` wraps at 76 columns) are not data
            data = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidImage(
                "the image is neither JPEG, PNG or WebP bytes nor base64 text of them"
            ) from None
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {len(data)} bytes, over the limit of {limits.max_bytes}",
            details={"bytes": len(data), "max_image_bytes": limits.max_bytes},
        )
    return data


def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def decode_image(data: bytes, limits: ImageLimits, spec: Preprocessing) -> Image:
    """One encoded image as an RGB Pillow image, refused before decoding if its header
    declares more than ``limits.max_pixels``."""
    from PIL import Image as PILImage

    try:
        image = PILImage.open(io.BytesIO(data), formats=FORMATS)
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise ImageTooLarge(
            "the image declares more pixels than the decoder allows",
            details={"max_image_pixels": limits.max_pixels},
        ) from None
    except Exception:  # UnidentifiedImageError, and the parsers' own errors
        raise InvalidImage() from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} pixels, over the limit of {limits.max_pixels}",
            details={"width": width, "height": height, "max_image_pixels": limits.max_pixels},
        )
    if image.format == "JPEG":
        image.draft("RGB", spec.resized_size(width, height))
    try:
        rgb = image.convert("RGB")
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a truncated or corrupt body only fails here
        raise InvalidImage() from None
    if orientation in _TRANSPOSE:  # a phone's photo, upright as its viewer shows it
        rgb = rgb.transpose(PILImage.Transpose(_TRANSPOSE[orientation]))
    return rgb


def preprocess(image: Image, spec: Preprocessing) -> np.ndarray:
    """The model input of one RGB image: [channels, height, width] or
    [height, width, channels], float32."""
    from PIL import Image as PILImage

    resample = {
        "bilinear": PILImage.Resampling.BILINEAR,
        "bicubic": PILImage.Resampling.BICUBIC,
        "nearest": PILImage.Resampling.NEAREST,
    }[spec.resample]
    size = spec.resized_size(*image.size)
    if image.size != size:
        image = image.resize(size, resample)
    height, width = spec.crop
    if spec.resize is not None:
        left = round((size[0] - width) / 2.0)
        top = round((size[1] - height) / 2.0)
        image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32)
    if spec.channels == "BGR":
        pixels = pixels[:, :, ::-1]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    values = (pixels * np.float32(spec.scale) - mean) / std
    if spec.layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values, dtype=np.float32)
