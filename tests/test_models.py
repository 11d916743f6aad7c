"""Models: the offline EfficientNet-Lite0 against the reference implementation its checkpoint
was saved from, class names, the torchvision models offline, and user models."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from torch import nn

from upx_core import Classifier, MaskSetting, OptimConfig, class_index, load_model, optimize_masks
from upx_core.data import load_image, sample_path
from upx_core.method.models import (
    MODEL_NAMES,
    efficientnet_lite_weights_path,
    imagenet_categories,
    map_state_dict_by_order,
)

# Sample images (index = class) that EfficientNet-Lite0 classifies correctly, checked by hand:
# tench, tusker, golden retriever, African elephant, banana.
TOP1_INDICES = (0, 101, 207, 386, 954)


@pytest.fixture(scope="module")
def top1_batch() -> torch.Tensor:
    return torch.stack([load_image(sample_path(i)) for i in TOP1_INDICES])


@pytest.fixture(scope="module")
def top1_logits(model, top1_batch) -> torch.Tensor:
    with torch.no_grad():
        return model(top1_batch)


def test_efficientnet_lite0_is_a_classifier_in_eval_mode(model):
    assert isinstance(model, Classifier)
    assert model.name == "efficientnet_lite0"
    assert not model.training and not any(m.training for m in model.modules())
    # trained on inputs scaled to [-1, 1]
    assert model.mean.flatten().tolist() == [0.5] * 3 and model.std.flatten().tolist() == [0.5] * 3
    assert (model.input_size, model.resize_size) == (224, 256)
    assert len(model.categories) == 1000 and model.categories[101] == "tusker"


def test_efficientnet_lite0_top1_on_sample_images(top1_logits):
    assert top1_logits.shape == (len(TOP1_INDICES), 1000)
    assert top1_logits.argmax(dim=1).tolist() == list(TOP1_INDICES)
    probs = torch.softmax(top1_logits, dim=1)
    assert (probs.max(dim=1).values > 0.3).all()


def test_efficientnet_lite0_equals_the_reference_implementation(model, top1_batch, top1_logits):
    """timm's tf_efficientnet_lite0 with the renamed checkpoint computes what the
    efficientnet_lite_pytorch model that the checkpoint belongs to computes.

    The reference's forward takes normalized images (its README normalizes before calling it);
    the packaged checkpoint was trained on (x - 0.5) / 0.5, which is what Classifier feeds timm.
    """
    _assert_equals_reference("efficientnet_lite0", top1_batch, top1_logits)


def _assert_equals_reference(name: str, batch: torch.Tensor, logits: torch.Tensor) -> None:
    efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")
    ref = efficientnet_lite_pytorch.EfficientNet.from_name(name.replace("_", "-"))
    state = torch.load(efficientnet_lite_weights_path(name), map_location="cpu",
                       weights_only=True)
    # the checkpoint's key names are the reference's, exactly: nothing missing, nothing extra
    assert list(state) == list(ref.state_dict())
    ref.load_state_dict(state)
    ref.eval()
    with torch.no_grad():
        expected = ref((batch - 0.5) / 0.5)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module", params=["efficientnet_lite1", "efficientnet_lite2"])
def bigger_lite(request) -> Classifier:
    return load_model(request.param)


def test_efficientnet_lite1_lite2_sizes_from_timm_and_correct_top1(bigger_lite):
    m = bigger_lite
    assert not m.training and m.mean.flatten().tolist() == [0.5] * 3
    # timm's pretrained_cfg: 240 px at crop_pct 0.882, 260 px at 0.890
    expected = {"efficientnet_lite1": (240, 272), "efficientnet_lite2": (260, 292)}[m.name]
    assert (m.input_size, m.resize_size) == expected
    batch = torch.stack([load_image(sample_path(i), m.input_size, m.resize_size)
                         for i in TOP1_INDICES])
    assert batch.shape[-1] == m.input_size
    with torch.no_grad():
        logits = m(batch)
    assert logits.argmax(dim=1).tolist() == list(TOP1_INDICES)
    _assert_equals_reference(m.name, batch, logits)


def test_efficientnet_lite_weights_path_rejects_other_models():
    with pytest.raises(ValueError, match="unknown model 'resnet18'"):
        efficientnet_lite_weights_path("resnet18")


def test_map_state_dict_by_order_renames_in_order():
    a, b = torch.zeros(2, 3), torch.ones(4)
    out = map_state_dict_by_order({"x.w": a, "x.b": b}, {"y.weight": torch.empty(2, 3),
                                                         "y.bias": torch.empty(4)})
    assert list(out) == ["y.weight", "y.bias"]
    assert out["y.weight"] is a and out["y.bias"] is b


def test_map_state_dict_by_order_rejects_count_and_shape_mismatch():
    target = {"w": torch.empty(2, 3), "b": torch.empty(2)}
    with pytest.raises(ValueError, match="checkpoint has 1 tensors, model expects 2"):
        map_state_dict_by_order({"w": torch.empty(2, 3)}, target)
    with pytest.raises(ValueError, match=r"src\.b \(3,\) does not fit b \(2,\)"):
        map_state_dict_by_order({"src.w": torch.empty(2, 3), "src.b": torch.empty(3)}, target)


# --- class names ---------------------------------------------------------------------------------

def test_imagenet_categories_are_torchvisions_names_in_order():
    # the names ship with upx (naming a class must not import torchvision); they must stay
    # the names torchvision's weights carry, which every stored result's class names are
    from torchvision.models import ResNet18_Weights

    names = imagenet_categories()
    assert names == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    names[386] = "changed"  # each call returns its own list: a caller's edit stays its own
    assert imagenet_categories()[386] == "African elephant"


@pytest.mark.parametrize("name", ["African elephant", "african elephant", "AFRICAN_ELEPHANT",
                                  "  african   elephant ", "African_elephant", 386, "386", " 386 "])
def test_class_index_exact_and_tolerant(name):
    assert class_index(name) == 386


def test_class_index_other_names():
    assert class_index("tusker") == 101
    assert class_index("Indian elephant") == 385
    assert class_index(0) == 0 and class_index("999") == 999
    # torchvision names class 134 "crane bird" and 517 "crane": "crane" is not ambiguous there
    assert class_index("crane") == 517
    assert class_index("crane_bird") == 134


@pytest.mark.parametrize("bad", [1000, -1, "1000"])
def test_class_index_out_of_range_raises(bad):
    with pytest.raises(ValueError, match=r"out of range 0\.\.999|unknown class name"):
        class_index(bad)


def test_class_index_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match="unknown class name") as err:
        class_index("african elefant")
    assert "'African elephant'" in str(err.value)


def test_class_index_ambiguous_name_asks_for_the_index():
    # ImageNet's 264 "Cardigan" (the corgi) and 474 "cardigan" (the sweater) differ only in case
    with pytest.raises(ValueError, match=r"ambiguous: indices \[264, 474\]"):
        class_index("cardigan")


@pytest.mark.parametrize("bad", [True, 3.0, None])
def test_class_index_rejects_non_names(bad):
    with pytest.raises(ValueError, match="class index or name"):
        class_index(bad)


@pytest.mark.parametrize("bad, match", [
    (-1, r"class index -1 is out of range 0\.\.999"),
    ("-1", r"class index -1 is out of range 0\.\.999"),
    ("386.0", "'386.0' is not an integer"),
    (386.0, "386.0 is not an integer"),
    (np.float64(386), "is not an integer"),
    ("", "target is empty"),
    ("   ", "target is empty"),
    (np.bool_(True), "class index or name"),
])
def test_class_index_says_what_is_wrong_instead_of_unknown_name(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        class_index(bad)
    assert "unknown class name" not in str(err.value)


def test_class_index_takes_numpy_integers():
    assert class_index(np.int64(386)) == 386 and type(class_index(np.int32(101))) is int
    assert class_index("+386") == 386


def test_class_index_suggests_by_word_for_a_misspelt_name():
    # "elefant" is far from "African elephant" as a whole, close to its last word
    with pytest.raises(ValueError, match="unknown class name 'elefant'") as err:
        class_index("elefant")
    closest = str(err.value).split("closest: ", 1)[1]
    assert closest.startswith("'Indian elephant', 'African elephant'"), closest
    with pytest.raises(ValueError, match="closest: 'African elephant'"):
        class_index("elefant africa")


def test_class_index_with_own_categories():
    cats = ["cat", "dog", "hot dog"]
    assert class_index("Hot_Dog", cats) == 2
    assert class_index(1, cats) == 1
    with pytest.raises(ValueError, match=r"out of range 0\.\.2"):
        class_index(3, cats)


# --- torchvision models and load_model's arguments ----------------------------------------------

def _online(host: str = "download.pytorch.org") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("name, filename", [("resnet18", "resnet18-f37072fd.pth"),
                                            ("vgg19", "vgg19-dcbb9e9d.pth")])
def test_pretrained_torchvision_model_offline_names_the_file_and_folder(
        name, filename, tmp_path, monkeypatch):
    if _online():
        pytest.skip("download.pytorch.org is reachable: this would download the weights")
    # An empty torch hub folder, so an already cached file cannot hide the offline path.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # Offline, the name lookup fails at once (measured: well under a second); torch.hub's
    # urlopen has no timeout of its own, so the socket default bounds a network that hangs.
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10.0)
    try:
        with pytest.raises(RuntimeError) as err:
            load_model(name, pretrained=True)
    finally:
        socket.setdefaulttimeout(old_timeout)
    message = str(err.value)
    assert filename in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert not (tmp_path / "hub" / "checkpoints" / filename).exists()


def test_resnet18_without_weights_has_imagenet_preprocessing():
    m = load_model("resnet18", pretrained=False)
    assert isinstance(m, Classifier) and m.name == "resnet18" and not m.training
    torch.testing.assert_close(m.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(m.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert (m.input_size, m.resize_size) == (224, 256)
    assert m.categories == imagenet_categories()
    with torch.no_grad():
        assert m(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


def test_load_model_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="unknown model 'nope'") as err:
        load_model("nope")
    for name in MODEL_NAMES:
        assert name in str(err.value)


# --- user models ---------------------------------------------------------------------------------

class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_classifier_normalizes_before_the_network():
    net = TinyNet()
    clf = Classifier(net, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0),
                     categories=["a", "b", "c", "d"])
    x = torch.rand(2, 3, 16, 16)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net((x - mean) / std))


@pytest.mark.parametrize("mean, std", [((0.5, 0.5), (1, 1, 1)), ((0, 0, 0), (1, 0, 1)),
                                       ((0, 0, 0), (1, -1, 1))])
def test_classifier_rejects_bad_normalization(mean, std):
    with pytest.raises(ValueError, match="mean and std"):
        Classifier(TinyNet(), mean=mean, std=std)


def test_user_module_wrapped_in_classifier_works_in_optimize_masks():
    clf = Classifier(TinyNet(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                     categories=["cat", "dog", "hot dog", "bun"], name="tiny")
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=gen)
    r = optimize_masks(clf, images, targets=["hot_dog", 1],
                       settings=[MaskSetting(mode="ftc"), MaskSetting(mode="fntc")],
                       config=OptimConfig(iterations=3, mask_size=8), device="cpu",
                       progress=False)
    assert r.targets.tolist() == [[2, 2], [1, 1]]
    assert r.masks.shape == (2, 2, 1, 8, 8)
    assert r.probs_before.shape == (2, 4) and r.probs_after.shape == (2, 2, 4)
    summary = r.describe(0, 0)  # top-5 lists of a 4-class model hold its 4 classes
    assert summary["target_name"] == "hot dog"
    assert [name for name, _ in summary["top5_before"]] == [
        clf.categories[i] for i in r.probs_before[0].argsort(descending=True).tolist()]
    assert torch.isfinite(r.masks).all() and not torch.equal(r.masks, torch.ones_like(r.masks))
    with pytest.raises(ValueError, match="unknown class name 'tusker'"):
        optimize_masks(clf, images, targets="tusker", config=OptimConfig(iterations=1,
                       mask_size=8), device="cpu", progress=False)
