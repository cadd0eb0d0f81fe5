"""Hostile files, folders, caches and option values for alexnet_cuda.train: each ends handled
(exit 0, reported) or refused (exit 2, one message naming the file or option), never in a
traceback, a signal or unbounded resource use. CPU only, fast: tiny images, tiny runs."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402

from alexnet_cuda.train import data as Dt  # noqa: E402

# torchvision 0.29 deprecates its codecs (TorchCodec replaces them); the comparisons use them.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


# --------------------------------------------------------------------------------------
# Bad image files, generated here
# --------------------------------------------------------------------------------------
def _png_bytes(rng, h=16, w=16):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return bytearray(buf.getvalue())


def damaged_png(path, rng):
    """A valid PNG with bytes 60-79 (inside its compressed data block) zeroed: libpng, as
    torchvision.io.decode_image calls it, dies with SIGSEGV on such files."""
    data = _png_bytes(rng)
    data[60:80] = bytes(20)
    with open(path, "wb") as f:
        f.write(data)


def grey16_png(path, rng, h=20, w=30):
    """A valid 16-bit greyscale PNG; returns its values."""
    values = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    Image.fromarray(values).save(path)
    return values


def rgb16_png(path, rng, h=5, w=7):
    """A valid 16-bit RGB PNG, written chunk by chunk (Pillow does not write 16-bit RGB)."""
    values = rng.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    raw = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))
    return values


# --------------------------------------------------------------------------------------
# The one decoding rule
# --------------------------------------------------------------------------------------
def test_damaged_png_raises_unreadable_image(tmp_path):
    path = str(tmp_path / "damaged.png")
    damaged_png(path, np.random.default_rng())
    with pytest.raises(Dt.UnreadableImage, match="damaged.png"):
        Dt.decode_file(path, 32)
    with open(path, "rb") as f:
        with pytest.raises(Dt.UnreadableImage):
            Dt.decode_bytes(f.read(), path)


def test_sixteen_bit_images_become_8_bit_rgb_keeping_the_high_byte(tmp_path):
    rng = np.random.default_rng()
    grey = grey16_png(str(tmp_path / "g.png"), rng)
    img = Dt.read_rgb(str(tmp_path / "g.png"))
    assert img.dtype == torch.uint8 and img.shape == (3,) + grey.shape
    expected = torch.from_numpy((grey >> 8).astype(np.uint8))
    for c in range(3):
        assert torch.equal(img[c], expected)
    rgb = rgb16_png(str(tmp_path / "c.png"), rng)
    img = Dt.read_rgb(str(tmp_path / "c.png"))
    assert torch.equal(img, torch.from_numpy((rgb >> 8).astype(np.uint8)).permute(2, 0, 1))
    assert Dt.decode_file(str(tmp_path / "c.png"), 32).dtype == torch.uint8


@pytest.mark.parametrize("mode", ["P", "L", "LA", "1", "RGBA", "CMYK"])
def test_every_mode_becomes_8_bit_rgb(tmp_path, mode):
    rng = np.random.default_rng()
    rgb = rng.integers(0, 256, (12, 18, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    im = im.convert(mode)
    path = str(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"))
    im.save(path, **({"transparency": 0} if mode == "P" else {}))
    img = Dt.read_rgb(path)
    assert img.dtype == torch.uint8 and img.shape == (3, 12, 18)
    if mode == "RGBA":  # alpha dropped, colours kept
        assert torch.equal(img, torch.from_numpy(rgb).permute(2, 0, 1))
    if mode in ("L", "LA"):
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])


def test_jpeg_pixels_equal_torchvision(tmp_path):
    import torchvision.io as tvio

    path = str(tmp_path / "x.jpg")
    Image.fromarray(np.random.default_rng().integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path, quality=90)
    assert torch.equal(Dt.read_rgb(path), tvio.decode_image(path, mode=tvio.ImageReadMode.RGB))


def test_file_name_that_is_not_utf8_is_read(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/bad\xff.png"
    with open(raw, "wb") as f:
        f.write(_png_bytes(np.random.default_rng()))
    (name,) = os.listdir(str(tmp_path))  # as os.walk gives it: a str with a surrogate escape
    assert Dt.decode_file(os.path.join(str(tmp_path), name), 32).shape == (3, 32, 32)
    assert Dt.read_rgb(raw).shape == (3, 16, 16)
    assert Dt.display_path(name) == "bad\\xff.png"


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n"])
def test_garbage_and_missing_files_raise_unreadable_image(tmp_path, content):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    with pytest.raises(Dt.UnreadableImage):
        Dt.decode_file(str(path))
    with pytest.raises(Dt.UnreadableImage, match="nope.png"):
        Dt.decode_file(str(tmp_path / "nope.png"))
    with pytest.raises(Dt.UnreadableImage):
        Dt.decode_file(str(tmp_path))  # a folder


def test_extreme_aspect_ratio_is_refused_before_the_resize(tmp_path):
    path = str(tmp_path / "strip.png")
    Image.fromarray(np.zeros((2, 2 * Dt.MAX_ASPECT + 2, 3), dtype=np.uint8) + 7).save(path)
    with pytest.raises(Dt.UnreadableImage, match="longer side"):
        Dt.decode_file(path)


def test_dataset_items_for_bad_files_are_unreadable(tmp_path):
    rng = np.random.default_rng()
    damaged_png(str(tmp_path / "d.png"), rng)
    grey16_png(str(tmp_path / "g.png"), rng)
    ds = Dt.ImageFolderUint8([(str(tmp_path / "d.png"), 0), (str(tmp_path / "g.png"), 1)], size=32)
    assert isinstance(ds[0], Dt.Unreadable)
    img, label = ds[1]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32) and label == 1
    batch = Dt.collate_uint8([ds[0], ds[1]])
    assert batch.images.shape == (1, 3, 32, 32) and batch.skipped == 1
    # the GPU-decoding path (bytes in workers, decode_batch) on the CPU: the same rules
    raw = Dt.ImageFolderBytes(ds.samples)
    out = Dt.decode_batch(Dt.collate_bytes([raw[0], raw[1]]), torch.device("cpu"), 32)
    assert out.images.shape == (1, 3, 32, 32) and out.skipped == 1
    assert torch.equal(out.images[0], img)
