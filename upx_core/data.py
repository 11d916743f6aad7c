"""Images: any file a user names, and the 1000 ImageNet sample images (one per class).

The samples are found in a local folder named by the ``UPX_DATA_DIR`` setting (environment
variable or argument). Without one, the single requested file is downloaded from the upstream
repository into a user cache folder and checked against the SHA-256 shipped with this package;
offline, that fails with an error saying how to point ``UPX_DATA_DIR`` at a local copy.
"""

from __future__ import annotations

import csv
import math
import os
import re
import threading
import warnings
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from .errors import SetupError
from .files import check_image_file

__all__ = [
    "DATA_DIR_ENV",
    "SAMPLES_URL",
    "data_dir",
    "sample_filenames",
    "sample_path",
    "open_rgb",
    "load_image",
]

DATA_DIR_ENV = "UPX_DATA_DIR"
SAMPLES_URL = "https://raw.githubusercontent.com/EliSchwartz/imagenet-sample-images/master/"


@cache
def _sample_table() -> tuple[tuple[str, str], ...]:
    text = resources.files("upx_core").joinpath("resources/imagenet_samples.csv").read_text()
    return tuple((row["filename"], row["sha256"]) for row in csv.DictReader(text.splitlines()))


def sample_filenames() -> list[str]:
    """The 1000 sample file names; position ``i`` is ImageNet class ``i``."""
    return [name for name, _ in _sample_table()]


def data_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The local sample folder: ``path`` if given, else ``$UPX_DATA_DIR``, else ``None``."""
    value = path if path is not None else os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():  # named as the user gave it: an argument or the setting
        raise FileNotFoundError(
            f"{'image' if path is not None else DATA_DIR_ENV} folder does not exist: {folder}")
    return folder


def _sample_key(name: str) -> str:
    return re.sub(r"[\s_\-']+", "", name.lower())


def sample_path(which: int | str, root: str | os.PathLike | None = None) -> Path:
    """Path of one sample image, by class index, file name, ``wnid_name`` stem or class name.

    ``sample_path(101)``, ``sample_path("n01871265_tusker")`` and ``sample_path("tusker")`` are
    the same file. Looks in ``root`` / ``$UPX_DATA_DIR``; without either, downloads that one file
    into the user cache (``platformdirs.user_cache_dir("upx")``) and verifies its hash.
    """
    table = _sample_table()
    if isinstance(which, int) or (isinstance(which, str) and which.isdigit()):
        idx = int(which)
        if not 0 <= idx < len(table):
            raise ValueError(f"sample index {idx} is out of range 0..{len(table) - 1}")
        filename, sha = table[idx]
    else:
        key = _sample_key(Path(which).stem if which.endswith(".JPEG") else which)
        matches = [
            (f, s) for f, s in table
            if _sample_key(Path(f).stem) == key or _sample_key(Path(f).stem.split("_", 1)[1]) == key
        ]
        if len(matches) != 1:
            why = "is ambiguous" if matches else "matches no sample image"
            raise ValueError(f"{which!r} {why}; use a class index 0..999 or a file name")
        filename, sha = matches[0]
    folder = data_dir(root)
    if folder is not None:
        path = folder / filename
        if not path.is_file():
            where = "image folder" if root is not None else f"{DATA_DIR_ENV} folder"
            raise FileNotFoundError(f"{filename} not found in {where} {folder}")
        return path
    return _download(filename, sha)


def _download(filename: str, sha256: str) -> Path:
    import platformdirs
    import pooch

    cache_dir = Path(platformdirs.user_cache_dir("upx")) / "imagenet-samples"
    url = SAMPLES_URL + filename.replace("'", "%27")
    try:
        return Path(pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=filename,
                                   path=cache_dir, progressbar=False))
    except Exception as err:  # requests' and pooch's errors have no common base
        raise SetupError(
            f"could not download {filename} from {url} ({type(err).__name__}). Offline, set "
            f"{DATA_DIR_ENV} to a folder holding the ImageNet sample images"
        ) from None


# Image.open checks MAX_IMAGE_PIXELS itself; open_rgb lifts that check for the instant it
# reads a header (and checks the size itself), under this lock so no other thread sees it lifted.
_OPEN_LOCK = threading.Lock()


def _open_unchecked(path: Path) -> Image.Image:
    """``Image.open`` (the header only, nothing decoded) without PIL's size check."""
    with _OPEN_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _fit_under(img: Image.Image, limit: int | None, path: Path) -> None:
    """Make ``img`` decode to at most ``limit`` pixels (PIL's ``MAX_IMAGE_PIXELS``), or raise.

    A JPEG above it is decoded at 1/2, 1/4 or 1/8 of its size (the decoder's own DCT scaling,
    ``Image.draft``: the full-size pixels are never held in memory). The smallest of these
    scales that fits is used: a 100-megapixel photo still decodes to 25 megapixels, far more than
    the network's 224 x 224 needs. Other formats cannot be decoded smaller and are refused.
    """
    w, h = img.size
    if not limit or w * h <= limit:
        return
    if img.format == "JPEG":
        for scale in (2, 4, 8):
            if math.ceil(w / scale) * math.ceil(h / scale) <= limit:
                img.draft(img.mode, (max(w // scale, 1), max(h // scale, 1)))
                if img.size[0] * img.size[1] <= limit:
                    return
                break
    raise ValueError(
        f"image {path} is too large to open safely: {w}x{h} = {w * h:,} pixels, above "
        f"PIL.Image.MAX_IMAGE_PIXELS ({limit:,}); upx decodes a JPEG up to 64 times that "
        "size downscaled, other formats only below it: shrink it or save it as a JPEG")


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file as 8-bit RGB, fully decoded and turned upright.

    The EXIF orientation (a phone photo taken sideways) is applied. Grayscale, palette,
    RGBA/LA (composited on white), 16-bit and float files are converted. A JPEG above PIL's
    decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 megapixels) is decoded
    downscaled by 2, 4 or 8 to fit under it (:func:`_fit_under`; the network sees 224 x 224
    anyway). A missing file raises FileNotFoundError, a folder IsADirectoryError; a non-image
    or truncated file, or another format above the limit, raises ValueError.
    """
    path = check_image_file(path)
    # PIL's global default is already False; set it explicitly so a truncated JPEG is an error
    # here even if another library in the process turned it on.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that, then decodes it all.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_unchecked(path) as img:
                _fit_under(img, Image.MAX_IMAGE_PIXELS, path)
                img.load()
                img = ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(
            f"image {path} is too large to open safely: {err} Shrink it or save it as a JPEG"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"not an image file: {path}") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from None
    try:
        return _to_rgb(img)
    except ValueError as err:
        raise ValueError(f"image {path}: {err}") from None


def _float_scale(arr: np.ndarray) -> float:
    """What a float image's white is: 1 for values in [0, 1], else 255 or 65535."""
    if not np.isfinite(arr).all():
        raise ValueError("float pixels include NaN or Inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 65535:
        raise ValueError(
            f"float pixels range over [{lo:g}, {hi:g}]; upx reads float images in [0, 1] "
            "(or 0..255, 0..65535): rescale it"
        )
    return 1.0 if hi <= 1 else 255.0 if hi <= 255 else 65535.0


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            top = _float_scale(arr)
        else:
            top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def check_min_size(img: Image.Image, min_size: int, name: object = "") -> None:
    """ValueError if ``img``'s shorter side is below ``min_size`` (the mask size)."""
    if min(img.size) < min_size:
        raise ValueError(
            f"image {name} is {img.size[0]}x{img.size[1]}, smaller than the "
            f"{min_size}x{min_size} mask"
        )


def load_image(
    source: str | os.PathLike | Image.Image,
    input_size: int = 224,
    resize_size: int = 256,
    min_size: int = 1,
) -> torch.Tensor:
    """A ``[3, input_size, input_size]`` float tensor in [0, 1] from a file or PIL image.

    A PIL image is turned upright by its EXIF orientation, as a file is.
    Shorter side resized to ``resize_size`` (antialiased), then center-cropped, as torchvision's
    ImageNet evaluation transforms do. An image whose shorter side is below ``min_size`` (the
    optimizer passes the mask size) raises ValueError: upsampling it would explain
    interpolation, not the picture.
    """
    if isinstance(source, Image.Image):
        img = _to_rgb(ImageOps.exif_transpose(source))
        name = getattr(source, "filename", "") or "(PIL image)"
    else:
        img, name = open_rgb(source), source
    check_min_size(img, min_size, name)
    tensor = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    tensor = TF.resize(tensor, [resize_size], antialias=True)
    return TF.center_crop(tensor, [input_size, input_size]).clamp_(0.0, 1.0)
