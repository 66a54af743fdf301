"""Image decoding under limits, and the declared preprocessing against numpy references."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from maas.errors import ImageTooLarge, InvalidImage, UnsupportedArtifact
from maas.runtimes.base import ImageLimits
from maas.runtimes.images import Preprocessing, decode_image, image_bytes, preprocess

LIMITS = ImageLimits(max_bytes=1024 * 1024, max_pixels=1_000_000)


def _encoded(array: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def _triangle_resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's BILINEAR resize in float numpy: a triangle filter, widened by the scale
    when shrinking (antialiasing), applied along x then y."""

    def weights(size_in: int, size_out: int) -> np.ndarray:
        scale = size_in / size_out
        support = max(scale, 1.0)
        matrix = np.zeros((size_out, size_in))
        for out in range(size_out):
            center = (out + 0.5) * scale
            sources = np.arange(size_in) + 0.5
            matrix[out] = np.clip(1.0 - np.abs(sources - center) / support, 0.0, None)
            matrix[out] /= matrix[out].sum()
        return matrix

    along_x = np.einsum("ox,yxc->yoc", weights(pixels.shape[1], width), pixels.astype(float))
    return np.einsum("oy,yxc->oxc", weights(pixels.shape[0], height), along_x)


@pytest.mark.parametrize(
    ("body", "size"),
    [
        # shorter side to 24, center crop 20x16, BGR, NHWC, torchvision-style scaling
        (
            {
                "resize": 24,
                "crop": [20, 16],
                "scale": 1 / 255,
                "mean": [0.406, 0.456, 0.485],
                "std": [0.225, 0.224, 0.229],
                "channels": "BGR",
                "layout": "NHWC",
            },
            (53, 37),
        ),
        # straight to 12x12, RGB, NCHW, TensorFlow-style scaling
        ({"crop": 12, "mean": [127, 127, 127], "std": [128, 128, 128]}, (30, 41)),
    ],
)
def test_preprocessing_equals_a_numpy_reference(
    body: dict[str, object], size: tuple[int, int]
) -> None:
    spec = Preprocessing.from_json(body)
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)

    got = preprocess(Image.fromarray(pixels), spec)

    width, height = spec.resized_size(*size)
    expected = _triangle_resize(pixels, width, height)
    crop_h, crop_w = spec.crop
    top, left = round((height - crop_h) / 2), round((width - crop_w) / 2)
    expected = expected[top : top + crop_h, left : left + crop_w]
    if spec.channels == "BGR":
        expected = expected[:, :, ::-1]
    expected = (expected * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    if spec.layout == "NCHW":
        expected = expected.transpose(2, 0, 1)
    assert got.dtype == np.float32
    assert got.shape == tuple(spec.input_shape[1:])
    # Pillow rounds to 8 bits between its two passes: at most one level apart.
    tolerance = 1.01 * spec.scale / min(spec.std)
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)


def test_resize_keeps_the_aspect_ratio_as_torchvision_does() -> None:
    spec = Preprocessing.from_json({"resize": 256, "crop": 224})
    assert spec.resized_size(600, 400) == (384, 256)
    assert spec.resized_size(400, 601) == (256, 384)
    assert spec.resized_size(300, 300) == (256, 256)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({}, "crop"),
        ({"crop": 0}, "crop"),
        ({"crop": 224, "resize": 100}, "resize"),
        ({"crop": 224, "std": [1, 0, 1]}, "std"),
        ({"crop": 224, "mean": [1, 2]}, "mean"),
        ({"crop": 224, "layout": "CHW"}, "layout"),
        ({"crop": 224, "channels": "RGBA"}, "channels"),
        ({"crop": 224, "scale": "1/255"}, "scale"),
    ],
)
def test_a_wrong_declaration_is_refused_by_name(body: dict[str, object], complaint: str) -> None:
    with pytest.raises(UnsupportedArtifact, match=complaint):
        Preprocessing.from_json(body)


SPEC = Preprocessing(crop=(8, 8), resize=8)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        _encoded(np.zeros((4, 4, 3), np.uint8), "GIF"),  # an image, not one of ours
        _encoded(np.zeros((64, 64, 3), np.uint8), "PNG")[:60],  # truncated
        b"\xff\xd8\xff" + b"\x00" * 40,  # a JPEG's first bytes and nothing of one
    ],
)
def test_bytes_that_are_not_an_image_are_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImage) as raised:
        decode_image(image_bytes(data, LIMITS), LIMITS, SPEC)
    assert raised.value.code == "invalid_image"
    assert raised.value.status == 400


def test_base64_text_and_data_urls_decode_like_the_raw_bytes() -> None:
    noise = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    raw = _encoded(noise, "WEBP", lossless=True)  # over 57 bytes: base64 wraps it
    text = base64.b64encode(raw)
    assert image_bytes(raw, LIMITS) == raw
    assert image_bytes(text, LIMITS) == raw
    assert image_bytes(text.decode(), LIMITS) == raw
    assert image_bytes(b"data:image/webp;base64," + text, LIMITS) == raw
    assert base64.encodebytes(raw).count(b"\n") > 1
    assert image_bytes(base64.encodebytes(raw), LIMITS) == raw  # wrapped at 76 columns
    assert decode_image(raw, LIMITS, SPEC).size == (7, 5)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixels: its header, and a data chunk of
    ten zero bytes (not even a zlib stream)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", bytes(10))


def test_too_many_pixels_are_refused_from_the_header_before_decoding() -> None:
    # 55 bytes declaring 5000x5000: decoding would fail (there are no pixels), so a
    # refusal for size shows the header was checked first.
    with pytest.raises(ImageTooLarge) as raised:
        decode_image(_png_header(5000, 5000), LIMITS, SPEC)
    assert raised.value.status == 413
    assert raised.value.details["width"] == 5000
    # Past Pillow's own bomb threshold too: still 413, never a 500 or a warning.
    with pytest.raises(ImageTooLarge):
        decode_image(_png_header(60000, 60000), ImageLimits(max_pixels=10**12), SPEC)
    # Within the limit, the same header is simply not an image.
    with pytest.raises(InvalidImage):
        decode_image(_png_header(500, 500), LIMITS, SPEC)


def test_an_image_over_the_byte_limit_is_refused() -> None:
    noisy = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encoded(noisy)
    with pytest.raises(ImageTooLarge) as raised:
        image_bytes(data, ImageLimits(max_bytes=len(data) - 1))
    assert raised.value.code == "image_too_large"
    assert image_bytes(data, ImageLimits(max_bytes=len(data))) == data


def test_a_large_jpeg_is_decoded_at_a_reduced_scale() -> None:
    photo = np.random.default_rng(2).integers(0, 256, (800, 1200, 3), dtype=np.uint8)
    data = _encoded(photo, "JPEG")
    image = decode_image(data, LIMITS, Preprocessing(crop=(50, 50), resize=64))
    # DCT scaling: the smallest eighth, quarter or half that still covers 96x64.
    assert image.size == (150, 100)


def test_a_photo_is_turned_upright_as_its_exif_orientation_says() -> None:
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)  # left half red
    pixels[:, 10:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    data = _encoded(pixels, "JPEG", quality=95, exif=exif)
    upright = np.asarray(decode_image(data, LIMITS, SPEC))
    assert upright.shape == (20, 10, 3)
    assert upright[2, 5, 0] > 200 > upright[2, 5, 2]  # the top is red
    assert upright[17, 5, 2] > 200 > upright[17, 5, 0]  # the bottom is blue
    plain = np.asarray(decode_image(_encoded(pixels, "JPEG", quality=95), LIMITS, SPEC))
    assert plain.shape == (10, 20, 3)
