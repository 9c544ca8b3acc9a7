"""The one decoder for untrusted bytes refuses what would hurt us, with a stable reason."""

import io

import numpy as np
import pytest
from PIL import Image

from shared.images import ImageRejected, decode_rgb, probe
from tests.support.images import png_declaring, solid_jpeg


def test_valid_jpeg_decodes_to_rgb():
    arr = decode_rgb(solid_jpeg())
    assert arr.shape == (30, 40, 3) and arr.dtype == np.uint8
    assert arr[..., 0].mean() > 150 and arr[..., 2].mean() < 80


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "undecodable"),
        (b"this is not an image, just text named .jpg\n", "undecodable"),
        (solid_jpeg(400, 300)[:600], "undecodable"),
        (png_declaring(30000, 30000), "too_large"),
    ],
    ids=["zero-byte", "text", "truncated-jpeg", "bomb-png"],
)
def test_bad_payloads_are_rejected_with_reason(payload, reason):
    with pytest.raises(ImageRejected) as info:
        decode_rgb(payload, max_pixels=40_000_000)
    assert info.value.reason == reason
    # Words for the person who sent the file, never Pillow's text naming Python objects.
    assert info.value.message and "BytesIO" not in info.value.message
    assert " at 0x" not in info.value.message and "<" not in info.value.message


def test_a_text_file_is_named_as_not_an_image():
    with pytest.raises(ImageRejected) as info:
        probe(b"this is not an image, just text named .jpg\n")
    assert info.value.reason == "undecodable"
    assert info.value.message == (
        "the file is not an image in a format we read (JPEG, PNG, WebP, BMP, GIF or TIFF)"
    )


def test_probe_reads_only_the_header_of_a_bomb():
    with pytest.raises(ImageRejected, match="limit of 40000000 pixels"):
        probe(png_declaring(30000, 30000), max_pixels=40_000_000)


def test_disallowed_format_is_refused():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PPM")
    with pytest.raises(ImageRejected, match="PPM"):
        decode_rgb(buf.getvalue())
