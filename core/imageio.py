"""Reading and writing photos and masks as numpy arrays, 8- and 16-bit.

Pillow truncates 16-bit colour PNGs to 8 bits, which would break "pixels outside the
selection stay bit-identical" for 16-bit photos; so 16-bit PNGs go through a small codec
here (zlib + the five PNG filters). Everything else goes through Pillow.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .photo import PhotoError

PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def read_image(path: str | Path) -> np.ndarray:
    """[H, W, 3|4] uint8 or uint16. Grey becomes RGB (values unchanged), alpha is kept."""
    path = Path(path)
    if not path.is_file():
        raise PhotoError(f"no such image: {path}")
    data = path.read_bytes()
    if data[:8] == PNG_SIG and _png_bit_depth(data) == 16:
        arr = _decode_png16(data, path)
    else:
        arr = _read_pillow(path)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] in (1, 2):  # grey (+ alpha) -> RGB (+ alpha)
        arr = np.concatenate([arr[..., :1]] * 3 + ([arr[..., 1:]] if arr.shape[2] == 2 else []), 2)
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path) -> np.ndarray:
    """[H, W] uint8 selection: grey value (or luminance) of any image; 16-bit is scaled."""
    arr = read_image(path)
    rgb = arr[..., :3].astype(np.float64)
    if arr.dtype == np.uint16:
        rgb /= 257.0
    grey = rgb.mean(axis=2) if np.ptp(rgb, axis=2).any() else rgb[..., 0]
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


def write_image(path: str | Path, arr: np.ndarray) -> None:
    """Write [H, W, C] uint8/uint16; 16-bit is written as a 16-bit PNG whatever the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        if path.suffix.lower() != ".png":
            raise PhotoError(f"16-bit results are written as PNG; use a .png name, not {path.name}")
        path.write_bytes(_encode_png16(arr))
        return
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2] if arr.ndim == 3 else 1]
    img = Image.fromarray(arr if arr.ndim == 2 or arr.shape[2] > 1 else arr[..., 0], mode)
    if path.suffix.lower() in (".jpg", ".jpeg") and mode == "RGBA":
        img = img.convert("RGB")
    try:
        img.save(path)
    except (ValueError, KeyError) as e:
        raise PhotoError(f"cannot write {path.name}: {e}") from None


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                return np.asarray(img, dtype=np.uint16)
            if mode == "I":  # 32-bit int grey, as some 16-bit TIFFs open
                return np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
            bits = getattr(img, "tag_v2", {}).get(258, (8,))  # TIFF BitsPerSample
            if max(bits if isinstance(bits, tuple) else (bits,)) > 8 and mode.startswith("RGB"):
                # Pillow would silently drop to 8 bits and break bit-exact output.
                raise PhotoError(
                    f"{path.name}: 16-bit colour TIFF is not supported; save it as 16-bit PNG"
                )
            if mode not in ("RGB", "RGBA", "L", "LA"):
                img = img.convert("RGBA" if "A" in mode or "transparency" in img.info else "RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise PhotoError(f"cannot read image {path.name}: {str(e).splitlines()[0][:120]}") from None


def _chunks(data: bytes, path: Path):
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise PhotoError(f"cannot read image {path.name}: truncated PNG")
        yield kind, body
        pos += 12 + length


def _png_bit_depth(data: bytes) -> int:
    return data[24] if len(data) > 25 else 0


def _decode_png16(data: bytes, path: Path) -> np.ndarray:
    ihdr, idat = None, []
    for kind, body in _chunks(data, path):
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    if ihdr is None:
        raise PhotoError(f"cannot read image {path.name}: PNG without header")
    w, h, depth, ctype, _, _, interlace = ihdr
    if ctype not in _CHANNELS or interlace:
        raise PhotoError(
            f"cannot read image {path.name}: unsupported 16-bit PNG "
            f"(colour type {ctype}, interlace {interlace}); save it non-interlaced"
        )
    c = _CHANNELS[ctype]
    bpp, stride = 2 * c, 2 * c * w
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error:
        raise PhotoError(f"cannot read image {path.name}: corrupt PNG data") from None
    if len(raw) < h * (stride + 1):
        raise PhotoError(f"cannot read image {path.name}: truncated PNG data")
    rows = np.frombuffer(raw, np.uint8, h * (stride + 1)).reshape(h, stride + 1)
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 1:  # Sub: a running sum along each byte lane
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) & 255
        elif f == 2:
            cur = (line + prev) & 255
        elif f in (3, 4):  # depend on the decoded pixel to the left: one pixel at a time
            cur = _unfilter_seq(f, line.reshape(w, bpp), prev.reshape(w, bpp)).reshape(-1)
        else:
            raise PhotoError(f"cannot read image {path.name}: bad PNG filter {f}")
        out[y] = cur
        prev = cur
    return out.view(">u2").reshape(h, w, c).astype(np.uint16)


def _unfilter_seq(f: int, line: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """PNG Average (3) or Paeth (4) for one row: [W, bpp] int32 arrays."""
    cur = np.empty_like(line)
    a = np.zeros(line.shape[1], np.int32)
    c = np.zeros(line.shape[1], np.int32)
    for x in range(line.shape[0]):
        b = prev[x]
        if f == 3:
            p = (a + b) >> 1
        else:
            pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
            p = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        a = cur[x] = (line[x] + p) & 255
        c = b
    return cur


def _encode_png16(arr: np.ndarray) -> bytes:
    h, w = arr.shape[:2]
    c = 1 if arr.ndim == 2 else arr.shape[2]
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    be = np.ascontiguousarray(arr.reshape(h, w * c).astype(">u2")).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), be], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return (
        PNG_SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    )
