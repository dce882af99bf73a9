"""Reading MNIST-style IDX files (MNIST, Fashion-MNIST) from a local folder, plain or gzipped.

IDX: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each
dimension as a big-endian uint32, then the values in C order.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# The standard file names of MNIST and Fashion-MNIST (each may also end in .gz).
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one IDX file (uint8), e.g. images (N, 28, 28) or labels (N,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != _UBYTE:
        raise ValueError(f"{path}: IDX type 0x{raw[2]:02x} is not unsigned bytes")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} values, but the header says {shape}")
    return data.reshape(shape)


def find_idx_files(folder: Path) -> dict[str, Path]:
    """The four standard files in ``folder`` (plain or .gz); ValueError naming what is missing."""
    if not folder.is_dir():
        raise ValueError(f"no such folder: {folder}")
    found: dict[str, Path] = {}
    for key, name in FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            raise ValueError(f"{name}[.gz] not found in {folder}")
    return found


def load_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) from an MNIST-style folder."""
    files = find_idx_files(folder)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{folder}: {part} images {images.shape} do not match labels {labels.shape}")
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]
