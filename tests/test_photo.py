"""Real photos of any size: crop and resize; 8/16-bit image files."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from samples import make_mask, make_photo

from ganpaint.core.imageio import read_image, read_mask, write_image
from ganpaint.core.photo import (
    Box,
    PhotoError,
    check_photo,
    crop,
    crop_scaled,
    mask_to_model,
    mask_window,
    selection_box,
    to_model,
    whole_box,
)


def test_selection_box_is_a_square_around_the_selection_with_context():
    mask = make_mask(800, 1000, (300, 400, 380, 520))  # 80 × 120 selection
    box = selection_box(mask, context=0.5)
    assert box.size == 240
    assert box.x0 <= 400 and box.x0 + box.size >= 520
    assert box.y0 <= 300 and box.y0 + box.size >= 380
    # near a border the square slides inside the image instead of leaving it
    corner = selection_box(make_mask(800, 1000, (0, 0, 50, 50)), context=0.5)
    assert (corner.x0, corner.y0) == (0, 0)


def test_whole_box_and_crop_repeat_borders():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    box = whole_box(3, 4)
    assert box.size == 4
    c = crop(img, box)
    assert c.shape == (4, 4, 1)
    assert (c[:, 0, 0] == img[np.clip(np.arange(box.y0, box.y0 + 4), 0, 2), 0, 0]).all()


@pytest.mark.parametrize(
    "h,w,box,res",
    [
        (300, 500, Box(10, -20, 333), 64),  # past the border, S/R not a whole number
        (200, 900, Box(0, -350, 900), 64),  # a whole-frame box of a wide photo
        (700, 900, Box(100, 50, 640), 256),
        (50, 60, Box(0, 0, 60), 64),  # enlarged, not shrunk
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_crop_scaled_is_crop_then_resize_exactly(h, w, box, res, dtype):
    """Row by row, without the full-size crop: the same bits (the inversion's session key
    and its result depend on them)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, np.iinfo(dtype).max, (h, w, 4), dtype=dtype)
    mask = rng.integers(0, 255, (h, w), dtype=np.uint8)
    one_piece = to_model(crop(img[..., :3], box), res)
    assert torch.equal(crop_scaled(img[..., :3], box, res) * 2 - 1, one_piece)
    assert torch.equal(crop_scaled(mask, box, res).clamp(0, 1), mask_to_model(crop(mask, box), res))


def test_mask_window_is_the_grown_bounding_box_clipped_to_the_image():
    mask = make_mask(100, 120, (20, 30, 40, 60))
    assert mask_window(mask) == (20, 40, 30, 60)
    assert mask_window(mask, 25) == (0, 65, 5, 85)
    assert mask_window(np.zeros((5, 5), np.uint8)) is None


def test_check_photo_rejects_bad_input():
    photo = make_photo(10, 12)
    with pytest.raises(PhotoError, match="mask size 5×5 differs from image size 12×10"):
        check_photo(photo, np.zeros((5, 5), np.uint8))
    with pytest.raises(PhotoError, match="mask is empty"):
        check_photo(photo, np.zeros((10, 12), np.uint8))
    with pytest.raises(PhotoError, match="H×W×3"):
        check_photo(photo[..., :2])
    with pytest.raises(PhotoError, match="8- or 16-bit"):
        check_photo(photo.astype(np.float32))


# -- files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [3, 4])
def test_png16_round_trip_is_exact(tmp_path, channels):
    a = np.random.default_rng(0).integers(0, 65536, (37, 53, channels)).astype(np.uint16)
    write_image(tmp_path / "a.png", a)
    b = read_image(tmp_path / "a.png")
    assert b.dtype == np.uint16 and np.array_equal(a, b)


def _png16_with_filter(a: np.ndarray, ftype: int) -> bytes:
    """Reference encoder applying one PNG filter type to every row (straight from the spec)."""
    h, w, c = a.shape
    raw = a.astype(">u2").reshape(h, w * c).view(np.uint8).astype(int)
    bpp = 2 * c
    out = bytearray()
    prev = np.zeros(raw.shape[1], int)
    for y in range(h):
        line = raw[y]
        filt = []
        for x in range(len(line)):
            left = line[x - bpp] if x >= bpp else 0
            up, ul = prev[x], (prev[x - bpp] if x >= bpp else 0)
            if ftype == 1:
                p = left
            elif ftype == 2:
                p = up
            elif ftype == 3:
                p = (left + up) // 2
            else:
                pa, pb, pc = abs(up - ul), abs(left - ul), abs(left + up - 2 * ul)
                p = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
            filt.append((line[x] - p) % 256)
        out += bytes([ftype]) + bytes(filt)
        prev = line

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ctype = {3: 2, 4: 6}[c]
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(out)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("ftype", [1, 2, 3, 4])
def test_png16_decoder_handles_every_filter(tmp_path, ftype):
    a = np.random.default_rng(ftype).integers(0, 65536, (9, 11, 4)).astype(np.uint16)
    (tmp_path / "f.png").write_bytes(_png16_with_filter(a, ftype))
    assert np.array_equal(read_image(tmp_path / "f.png"), a)


def test_8bit_formats_and_grey16(tmp_path):
    rgba = make_photo(20, 30, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "a.tif")
    assert np.array_equal(read_image(tmp_path / "a.tif"), rgba[..., :3])
    Image.fromarray(rgba[..., :3]).save(tmp_path / "a.jpg", quality=95)
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.shape == (20, 30, 3) and jpg.dtype == np.uint8
    g16 = (np.arange(600).reshape(20, 30) * 97).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g.tif")
    grey = read_image(tmp_path / "g.tif")
    assert grey.dtype == np.uint16 and np.array_equal(grey[..., 1], g16)


def test_masks_from_any_image(tmp_path):
    m = make_mask(20, 30, (5, 5, 15, 20), soft=3)
    Image.fromarray(m).save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), m)
    Image.fromarray(np.stack([m] * 3, 2)).save(tmp_path / "m3.png")
    assert np.array_equal(read_mask(tmp_path / "m3.png"), m)


def test_unreadable_files_are_one_line_errors(tmp_path):
    with pytest.raises(PhotoError, match="no such image"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(PhotoError) as e:
        read_image(tmp_path / "junk.png")
    assert "\n" not in str(e.value)
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(PhotoError, match="cannot read image"):
        read_image(tmp_path / "text.jpg")


def test_box_is_a_value():
    assert Box(1, 2, 3) == Box(1, 2, 3)
