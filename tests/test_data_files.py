"""Reading MNIST-style IDX folders and writing PNG files: tiny files the tests write themselves."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from experiments._idx import FILES, load_idx_folder, read_idx
from experiments._png import png_grey, tile
from experiments.digits_cnn import DigitsCNN
from PIL import Image

from hypersweep.trainer import TrainSettings, fit
from tests.conftest import ROOT, hypersweep

CNN_SWEEP = ROOT / "experiments" / "digits_cnn.yaml"


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(
    folder: Path, *, n_train: int = 60, n_test: int = 12, gz: bool = False
) -> dict[str, Any]:
    """Four IDX files: random 8x8 uint8 images with random labels 0..9."""
    rng = np.random.default_rng(0)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
        arrays[f"{part}_images"] = images
        arrays[f"{part}_labels"] = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        raw = idx_bytes(array)
        if gz:
            (folder / f"{FILES[key]}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / FILES[key]).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_folder_reads_back_exactly(tmp_path: Path, gz: bool) -> None:
    written = write_idx_folder(tmp_path, gz=gz)
    train_x, train_y, test_x, test_y = load_idx_folder(tmp_path)
    assert np.array_equal(train_x, written["train_images"]) and train_x.shape == (60, 8, 8)
    assert np.array_equal(train_y, written["train_labels"])
    assert np.array_equal(test_x, written["test_images"]) and np.array_equal(test_y, written["test_labels"])


def test_idx_rejects_a_file_that_is_not_idx(tmp_path: Path) -> None:
    bad = tmp_path / "x"
    bad.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "y"
    short.write_bytes(idx_bytes(np.zeros((3, 2, 2)))[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(short)


def test_cnn_reads_an_idx_folder_given_as_data_dir(tmp_path: Path) -> None:
    written = write_idx_folder(tmp_path, gz=True)
    experiment = DigitsCNN()
    experiment.configure({"data_dir": str(tmp_path)})
    data = experiment.load_data(seed=0)
    assert data.test is not None
    assert (len(data.train), len(data.val), len(data.test)) == (50, 10, 12)
    assert data.train.inputs.shape == (50, 1, 8, 8) and data.train.targets.dtype == torch.int64
    assert float(data.train.inputs.max()) <= 1.0
    expected = torch.tensor(written["test_images"] / 255.0, dtype=torch.float32)
    assert torch.equal(data.test.inputs[:, 0], expected)
    config = {"optimizer": "adam", "lr": 1e-3, "batch_size": 16, "channels": 4}
    result = fit(experiment, data, config, TrainSettings(max_epochs=1), _Quiet())
    assert result.epochs == 1 and result.stop_reason == "completed"


def test_without_data_dir_the_cnn_reads_the_8x8_digits() -> None:
    experiment = DigitsCNN()
    experiment.configure({"channels": 16})
    data = experiment.load_data(seed=0)
    assert data.train.inputs.shape[1:] == (1, 8, 8)
    assert len(data.train) + len(data.val) + len(data.test or ()) == 1797


def test_validate_accepts_an_idx_folder_and_names_a_bad_one(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "mnist")
    ok = hypersweep("validate", str(CNN_SWEEP), "--set", f"fixed.data_dir={tmp_path / 'mnist'}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    missing = hypersweep("validate", str(CNN_SWEEP), "--set", f"fixed.data_dir={tmp_path}", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith(f"error: {CNN_SWEEP}: fixed.data_dir: train-images-idx3-ubyte")
    relative = hypersweep("validate", str(CNN_SWEEP), "--set", "fixed.data_dir=mnist", cwd=tmp_path)
    assert relative.returncode == 2
    assert "fixed.data_dir: must be an absolute path" in relative.stderr
    assert "Traceback" not in missing.stderr + relative.stderr


def test_png_is_valid_and_holds_the_pixels() -> None:
    pixels = np.linspace(0.0, 1.0, 6 * 10).reshape(6, 10)
    data = png_grey(pixels)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every chunk: a bad CRC or zlib stream fails here
    assert image.mode == "L" and image.size == (10, 6)
    assert np.array_equal(np.asarray(image), np.rint(pixels * 255).astype(np.uint8))
    # The IDAT chunk's CRC covers its type and body.
    length = struct.unpack(">I", data[33:37])[0]
    assert struct.unpack(">I", data[41 + length : 45 + length])[0] == zlib.crc32(data[37 : 41 + length])


def test_tile_lays_images_out_on_a_grid() -> None:
    images = np.stack([np.full((2, 2), v) for v in (0.0, 0.25, 0.5)])
    grid = tile(images, columns=2, scale=2, gap=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1)
    assert grid[1, 1] == 0.0 and grid[1, 6] == 0.25 and grid[6, 1] == 0.5
    assert grid[6, 6] == 1.0 and grid[0, 0] == 1.0  # the empty cell and the gaps stay white


class _Quiet:
    def restore(self):
        return None

    def report(self, metrics, state, artifacts=None) -> None:
        pass
