"""Writing greyscale images as PNG files with the standard library alone (zlib, struct)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_grey(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of ``pixels`` (H, W) with values in [0, 1] (0 = black)."""
    if pixels.ndim != 2:
        raise ValueError(f"expected (H, W) pixels, got shape {pixels.shape}")
    height, width = pixels.shape
    grey = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    # Each scanline starts with filter type 0 (none).
    raw = b"".join(b"\x00" + grey[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bit, greyscale, no interlace
    return (
        _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    )


def tile(images: np.ndarray, *, columns: int, scale: int = 1, gap: int = 1) -> np.ndarray:
    """Lay (N, h, w) images out on a grid, ``columns`` wide, each enlarged ``scale`` times."""
    n, h, w = images.shape
    big = images.repeat(scale, axis=1).repeat(scale, axis=2)
    rows = -(-n // columns)
    cell_h, cell_w = h * scale + gap, w * scale + gap
    grid = np.ones((rows * cell_h + gap, columns * cell_w + gap))  # white lines between images
    for i, image in enumerate(big):
        r, c = divmod(i, columns)
        grid[
            gap + r * cell_h : gap + r * cell_h + h * scale, gap + c * cell_w : gap + c * cell_w + w * scale
        ] = image
    return grid
