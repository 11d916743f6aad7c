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
