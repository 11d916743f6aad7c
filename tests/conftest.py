"""Shared fixtures: the offline EfficientNet-Lite0 (loaded once), a few real sample images.

``UPX_DATA_DIR`` defaults to ``../shared/imagenet-samples`` next to the repository when that
folder exists and the variable is unset (as the Makefile does); otherwise upx_core fetches the
samples upstream. Optimizer tests use 80 x 80 center crops of real images (a 224 x 224 pass costs
~8x more): at 80 x 80 neither crop's top class is saturated, so the model's gradient matters.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2.functional import center_crop

ROOT = Path(__file__).resolve().parents[1]
_SHARED_SAMPLES = ROOT.parent / "shared" / "imagenet-samples"
if not os.environ.get("UPX_DATA_DIR") and _SHARED_SAMPLES.is_dir():
    os.environ["UPX_DATA_DIR"] = str(_SHARED_SAMPLES)

# One intra-op thread: these tests run small batches, and on cores shared with other jobs
# OpenMP's spinning threads made a 4-mask, 3-iteration run take 25 s at 2 threads against
# 0.5 s at 1 (measured). UPX_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("UPX_TEST_THREADS", "1")))

TUSKER = 101
INDIAN_ELEPHANT = 385
AFRICAN_ELEPHANT = 386
CROP = 80


@pytest.fixture(scope="session")
def model():
    """EfficientNet-Lite0 with its packaged ImageNet weights. Tests must not mutate it:
    the ones that change flags or modes work on ``copy.deepcopy(model)``."""
    from upx_core import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def tusker() -> torch.Tensor:
    from upx_core import load_image, sample_path

    return load_image(sample_path(TUSKER))


@pytest.fixture(scope="session")
def african_elephant() -> torch.Tensor:
    from upx_core import load_image, sample_path

    return load_image(sample_path(AFRICAN_ELEPHANT))


@pytest.fixture(scope="session")
def crops(tusker, african_elephant) -> torch.Tensor:
    """``[2, 3, 80, 80]``: center crops of the tusker and the African elephant images."""
    return torch.stack([center_crop(tusker, [CROP, CROP]),
                        center_crop(african_elephant, [CROP, CROP])]).contiguous()


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium under playwright, one for the whole session: the book's browser tests
    and the JupyterLab test share it (a second ``sync_playwright`` inside the first one's
    running loop is refused, so each opening its own failed whenever both ran in one session,
    as `make test` after `make book` does)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing (`make test` installs Debian's chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

