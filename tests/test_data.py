"""Sample lookup (local folder and the real offline download path) and image loading of the
formats users bring: grayscale JPEG, RGBA / palette / 16-bit PNG, broken files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from upx_core.data import DATA_DIR_ENV, load_image, open_rgb, sample_filenames, sample_path

TUSKER_FILE = "n01871265_tusker.JPEG"
# One of the 23 grayscale JPEGs among the 1000 samples (PIL mode "L"): class 191, Airedale.
GRAYSCALE_INDEX = 191


@pytest.fixture
def samples_dir() -> Path:
    value = os.environ.get(DATA_DIR_ENV)
    if not value or not Path(value).is_dir():
        pytest.skip(f"{DATA_DIR_ENV} does not name a local sample folder")
    return Path(value)


# --- sample_path ---------------------------------------------------------------------------------

def test_sample_table_is_in_class_order():
    names = sample_filenames()
    assert len(names) == 1000
    assert names[101] == TUSKER_FILE and names[386] == "n02504458_African_elephant.JPEG"
    assert names == sorted(names)


@pytest.mark.parametrize("which", [101, "101", "tusker", "Tusker", "n01871265_tusker",
                                   TUSKER_FILE])
def test_sample_path_by_index_name_stem_and_file(which, samples_dir):
    path = sample_path(which)
    assert path == samples_dir / TUSKER_FILE
    assert path.is_file()


def test_sample_path_by_class_name_with_spaces(samples_dir):
    assert sample_path("African elephant").name == "n02504458_African_elephant.JPEG"
    assert sample_path("african_elephant") == sample_path(386)


def test_sample_path_with_explicit_root(samples_dir, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV)
    assert sample_path(101, root=samples_dir) == samples_dir / TUSKER_FILE


@pytest.mark.parametrize("which, match", [(1000, "out of range"), (-1, "out of range"),
                                          ("1000", "out of range"),
                                          ("unicorn", "matches no sample image"),
                                          ("crane", "is ambiguous")])
def test_sample_path_bad_names_raise(which, match):
    with pytest.raises(ValueError, match=match):
        sample_path(which)


def test_missing_data_dir_raises_file_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sample_path(101)


def test_data_dir_without_the_file_raises_file_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=TUSKER_FILE):
        sample_path(101)


def test_a_folder_given_as_an_argument_is_not_called_the_setting(tmp_path):
    # the user named the folder: the error must not send them to UPX_DATA_DIR
    with pytest.raises(FileNotFoundError, match="^image folder does not exist: .*nowhere$"):
        sample_path(101, root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"{TUSKER_FILE} not found in image folder"):
        sample_path(101, root=tmp_path)


def _online(host: str = "raw.githubusercontent.com") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_without_data_dir_offline_the_download_fails_naming_the_setting(tmp_path, monkeypatch):
    if _online():
        pytest.skip("raw.githubusercontent.com is reachable: the download would succeed")
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # platformdirs' user cache on Linux
    with pytest.raises(RuntimeError, match=DATA_DIR_ENV) as err:
        sample_path(101)
    assert TUSKER_FILE in str(err.value)
    # it really tried our cache folder and left no partial file there
    assert not list(tmp_path.rglob("*.JPEG"))


# --- load_image ----------------------------------------------------------------------------------

def test_load_image_shape_and_range(samples_dir):
    x = load_image(samples_dir / TUSKER_FILE)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x.std() > 0.05  # a picture, not a flat fill
    assert load_image(samples_dir / TUSKER_FILE, input_size=96, resize_size=110).shape == (
        3, 96, 96)


def test_grayscale_jpeg_sample_loads_to_three_equal_channels():
    path = sample_path(GRAYSCALE_INDEX)
    with Image.open(path) as img:
        assert img.mode == "L"
    x = load_image(path)
    assert x.shape == (3, 224, 224)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def _load_exact(path) -> torch.Tensor:
    """A 32 x 32 file at its own size: no resampling, so pixel values can be checked."""
    return load_image(path, input_size=32, resize_size=32)


def test_rgba_png_is_composited_on_white(tmp_path):
    arr = np.zeros((32, 32, 4), dtype=np.uint8)
    arr[:, :16] = (200, 0, 0, 0)        # fully transparent red -> white
    arr[:, 16:] = (10, 20, 30, 255)     # opaque
    arr[:4, 16:] = (0, 0, 0, 51)        # 20 % black over white -> 204
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    x = _load_exact(path)
    assert x.shape == (3, 32, 32)
    assert torch.equal(x[:, 10, 5], torch.ones(3))
    torch.testing.assert_close(x[:, 20, 24], torch.tensor([10, 20, 30]) / 255.0)
    torch.testing.assert_close(x[:, 1, 24], torch.full((3,), 204 / 255.0), atol=1.5 / 255, rtol=0)


def test_palette_png_loads_its_colours(tmp_path):
    img = Image.new("P", (32, 32))
    img.putpalette([0, 0, 0, 255, 128, 0, 12, 34, 56] + [0] * (256 * 3 - 9))
    arr = np.zeros((32, 32), dtype=np.uint8)
    arr[:, 16:] = 1
    arr[20:, :16] = 2
    img.putdata(arr.flatten().tolist())
    path = tmp_path / "palette.png"
    img.save(path)
    with Image.open(path) as check:
        assert check.mode == "P"
    x = _load_exact(path)
    assert torch.equal(x[:, 5, 5], torch.zeros(3))
    torch.testing.assert_close(x[:, 5, 25], torch.tensor([255, 128, 0]) / 255.0)
    torch.testing.assert_close(x[:, 25, 5], torch.tensor([12, 34, 56]) / 255.0)


def test_palette_png_with_transparency_is_composited_on_white(tmp_path):
    img = Image.new("P", (32, 32))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putdata([1] * (32 * 32))
    path = tmp_path / "palette_transparent.png"
    img.save(path, transparency=1)
    assert torch.equal(_load_exact(path), torch.ones(3, 32, 32))


def test_16_bit_png_scales_by_65535(tmp_path):
    arr = np.zeros((32, 32), dtype=np.uint16)
    arr[:, 16:] = 65535
    arr[20:, :16] = 32768
    path = tmp_path / "gray16.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    x = _load_exact(path)
    assert torch.equal(x[:, 5, 5], torch.zeros(3))
    assert torch.equal(x[:, 5, 25], torch.ones(3))
    torch.testing.assert_close(x[:, 25, 5], torch.full((3,), 128 / 255.0))


def test_load_image_accepts_a_pil_image():
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    x = load_image(img, input_size=28, resize_size=28)
    assert x.shape == (3, 28, 28)
    torch.testing.assert_close(x[:, 14, 14], torch.tensor([1.0, 0.0, 0.0]))


def test_missing_image_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n")
    with pytest.raises(ValueError, match="not an image"):
        load_image(path)


def test_truncated_jpeg_raises(tmp_path):
    data = sample_path(101).read_bytes()
    path = tmp_path / "half.JPEG"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot decode"):
        open_rgb(path)
    with pytest.raises(ValueError, match="half.JPEG"):
        load_image(path)


def test_image_smaller_than_the_mask_raises(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (10, 10), (1, 2, 3)).save(path)
    with pytest.raises(ValueError, match="10x10, smaller than the 28x28 mask"):
        load_image(path, min_size=28)
    assert load_image(path, min_size=10).shape == (3, 224, 224)


# --- orientation, size limits, float pixels, folders ---------------------------------------------

EXIF_ORIENTATION = 0x0112


def test_exif_orientation_is_applied_so_a_sideways_photo_loads_upright(tmp_path):
    # What a phone writes: the pixels as the sensor saw them (here turned 90 degrees
    # counter-clockwise) and orientation 6, "turn 90 degrees clockwise to view".
    with Image.open(sample_path(101)) as upright:
        upright = upright.convert("RGB")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "phone.png"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    with Image.open(path) as stored:
        assert stored.size == upright.size[::-1]  # stored sideways
    assert open_rgb(path).size == upright.size
    reference = tmp_path / "upright.png"
    upright.save(reference)
    assert torch.equal(load_image(path), load_image(reference))
    with Image.open(path) as opened:  # a PIL image given directly is turned upright too
        assert torch.equal(load_image(opened), load_image(reference))
    assert torch.equal(load_image(open_rgb(path)), load_image(reference))  # and only once


@pytest.mark.parametrize("width, height", [
    (20_000, 10_000),  # 2e8 pixels: above twice PIL's MAX_IMAGE_PIXELS, PIL raises
    (10_000, 10_000),  # 1e8 pixels: above MAX_IMAGE_PIXELS, PIL only warns and decodes it all
])
def test_decompression_bomb_is_a_clear_error(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    Image.new("1", (width, height)).save(path)  # a few kB on disk
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match=r"bomb\.png is too large to open safely"):
        load_image(path)


def test_float_tiff_in_0_1_is_scaled_not_black(tmp_path):
    with Image.open(sample_path(101)) as img:
        gray = img.convert("L")
    gray.save(tmp_path / "gray.png")
    path = tmp_path / "float.tif"
    Image.fromarray(np.asarray(gray, dtype=np.float32) / 255.0, "F").save(path)
    with Image.open(path) as check:
        assert check.mode == "F"
    x = load_image(path)
    assert x.mean() > 0.2  # not black
    torch.testing.assert_close(x, load_image(tmp_path / "gray.png"), atol=1.5 / 255, rtol=0)


@pytest.mark.parametrize("fill, match", [(float("nan"), "NaN or Inf"), (-0.5, "rescale it")])
def test_float_tiff_outside_any_known_range_is_refused(tmp_path, fill, match):
    arr = np.full((32, 32), 0.5, dtype=np.float32)
    arr[:4, :4] = fill
    path = tmp_path / "odd.tif"
    Image.fromarray(arr, "F").save(path)
    with pytest.raises(ValueError, match=f"odd.tif: .*{match}"):
        load_image(path)


def test_a_folder_given_as_the_image_says_it_is_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not an image file"):
        load_image(tmp_path)


def test_a_jpeg_photo_above_the_decompression_limit_is_decoded_downscaled(tmp_path,
                                                                         monkeypatch):
    # a real photo over the limit (lowered here: a real 90-megapixel file is 25 MB): it is
    # decoded at 1/2 size by the JPEG decoder itself, and the network's input barely changes
    path = tmp_path / "big.jpg"
    with Image.open(sample_path(101)) as img:
        img.convert("RGB").resize((1600, 1200), Image.LANCZOS).save(path, quality=95)
    png = tmp_path / "big.png"
    with Image.open(path) as img:
        img.save(png)
    full = load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    assert open_rgb(path).size == (800, 600)  # 1.92 MP -> 0.48 MP, under the limit
    assert (load_image(path) - full).abs().mean() < 0.01
    # a PNG cannot be decoded smaller: refused, with advice that needs no Python
    with pytest.raises(ValueError, match=r"too large to open safely: 1600x1200 .* save it as a "
                                         r"JPEG$"):
        open_rgb(png)
