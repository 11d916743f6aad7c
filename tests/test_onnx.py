"""ONNX Runtime as a black box (upx_core.method.onnxbox): export, query, explain, refuse bad files.

The toy net of test_blackbox (class 0 hindered by its top-left quadrant) runs through a real
ONNX Runtime session; one test exports the real EfficientNet-Lite0 and compares its outputs
with torch's on two sample images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy import SIZE, Hindered

from upx_core import MaskSetting, OptimConfig, load_image, load_model, sample_path
from upx_core.method.blackbox import optimize_masks_blackbox, torch_predictor
from upx_core.method.models import Classifier
from upx_core.method.onnxbox import export_onnx, onnx_predictor

pytest.importorskip("onnxruntime")
# std near 1 keeps the toy net's calibration (p_0 about 0.2 clean); the mean shift and the std
# still have to be applied in the right order for outputs to match torch's.
MEAN, STD = (0.4, 0.5, 0.6), (0.9, 1.0, 1.1)


@pytest.fixture(scope="module")
def toy():
    return Classifier(Hindered(), mean=MEAN, std=STD, input_size=SIZE, resize_size=36,
                      categories=["hindered", "one", "two"], name="toy")


@pytest.fixture(scope="module")
def toy_onnx(toy, tmp_path_factory):
    return export_onnx(toy, tmp_path_factory.mktemp("onnx") / "toy.onnx")


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_exported_model_answers_as_torch_does(toy, toy_onnx, images):
    predict = onnx_predictor(toy_onnx)  # mean, std, size and output kind from the file
    assert predict.outputs == "logits" and predict.input_size == SIZE
    out = predict(images)
    assert isinstance(out, np.ndarray) and out.shape == (3, 3)
    with torch.no_grad():
        ref = toy(images).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_onnx_runs_a_call_in_chunks_of_its_batch_size(toy, toy_onnx):
    x = torch.rand(7, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = toy(x).numpy()
    for batch_size in (1, 3, 7, None):
        out = onnx_predictor(toy_onnx, batch_size=batch_size)(x)
        assert out.shape == (7, 3)  # every chunk's answers, in order
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            onnx_predictor(toy_onnx, batch_size=bad)


def test_onnx_and_torch_black_boxes_give_the_same_masks(toy, toy_onnx, images):
    config = OptimConfig(iterations=20)
    kw = dict(targets=0, settings=MaskSetting(mode="ftc", seed=3), config=config,
              queries=400, samples=4, outputs="logits", progress=False,
              # the antithetic estimator: tracking's first steps divide its estimate by P / d
              # (4 / 784), which lifts the backends' 1e-6 rounding differences to 0.008 in 26
              # of 784 cells after 20 iterations (measured)
              estimator="antithetic")
    onnx_res = optimize_masks_blackbox(onnx_predictor(toy_onnx), images[:1], **kw)
    torch_res = optimize_masks_blackbox(torch_predictor(toy, outputs="logits"), images[:1], **kw)
    assert int(onnx_res.queries[0, 0]) == int(torch_res.queries[0, 0]) == 2 + 20 * 8
    torch.testing.assert_close(onnx_res.masks, torch_res.masks, rtol=0, atol=1e-4)
    # and the search did something: the hindered class rose
    assert float(onnx_res.target_prob_after[0, 0]) > float(onnx_res.target_prob_before[0, 0])


def test_export_leaves_nothing_half_written(toy, tmp_path):
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(toy, tmp_path / "toy.bin")
    with pytest.raises(ValueError, match="does not exist"):
        export_onnx(toy, tmp_path / "missing" / "toy.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_onnx_files_get_one_line_errors(toy_onnx, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        onnx_predictor(tmp_path / "nothing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot read ONNX model") as err:
        onnx_predictor(garbage)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="input size given is 64"):
        onnx_predictor(toy_onnx, input_size=64)  # the toy's readout fixes 32 x 32
    with pytest.raises(ValueError, match="outputs must be one of"):
        onnx_predictor(toy_onnx, outputs="scores")


def test_a_plain_onnx_file_needs_its_preprocessing(toy, tmp_path, images):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(toy.net.eval(), (images[:1],), str(plain), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    with pytest.raises(ValueError, match="give its mean, std, outputs"):
        onnx_predictor(plain)
    predict = onnx_predictor(plain, mean=MEAN, std=STD, outputs="logits")
    with torch.no_grad():
        np.testing.assert_allclose(predict(images), toy(images).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"takes \[N, 3, 32, 32\] images"):
        predict(torch.rand(1, 3, 40, 40))


def test_real_efficientnet_lite0_through_onnx_runtime(tmp_path):
    model = load_model("efficientnet_lite0")
    path = export_onnx(model, tmp_path / "lite0.onnx")
    predict = onnx_predictor(path)
    assert predict.categories == model.categories and predict.resize_size == model.resize_size
    x = torch.stack([load_image(sample_path(i)) for i in (394, 911)])
    with torch.no_grad():
        ref = model(x)
    out = torch.from_numpy(predict(x))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert out.argmax(1).tolist() == ref.argmax(1).tolist()


@pytest.mark.parametrize("channels_last", [False, True])
def test_torch_black_box_answers_through_a_folded_copy(channels_last):
    """torch_predictor's network: batch norms folded (the default), weights channels-last if
    asked; the same logits as the model within float32 rounding, and the caller's model is left
    as it was."""
    model = load_model("efficientnet_lite0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.stack([load_image(sample_path(i)) for i in (394, 911)])
    fast = torch_predictor(model, "logits", channels_last=channels_last)(x)
    plain = torch_predictor(model, "logits", fold_batchnorm=False, channels_last=False)(x)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(plain, ref, rtol=0, atol=0)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-3)
    assert fast.argmax(1).tolist() == ref.argmax(1).tolist()
    assert not torch.equal(fast, plain)  # it did answer through another network
    after = model.state_dict()
    assert all(torch.equal(after[k], v) and after[k].is_contiguous() for k, v in before.items())


@pytest.mark.parametrize("fixed", [1, 2])
def test_a_file_with_a_fixed_batch_size_is_fed_that_many(toy, tmp_path, images, fixed):
    # what torch.onnx.export writes without dynamic_axes: the batch size of its example
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(toy.net.eval(), (images[:fixed],), str(path), dynamo=False,
                      input_names=["x"])
    predict = onnx_predictor(path, mean=MEAN, std=STD, outputs="logits", batch_size=8)
    with torch.no_grad():
        np.testing.assert_allclose(predict(images), toy(images).numpy(), rtol=1e-5, atol=1e-5)


def test_an_exported_file_respects_the_umask(toy, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = export_onnx(toy, tmp_path / "toy.onnx")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_file_returning_probabilities_is_not_read_as_logits(toy, tmp_path, images):
    path = tmp_path / "softmax.onnx"
    net = torch.nn.Sequential(toy.net, torch.nn.Softmax(dim=1)).eval()
    torch.onnx.export(net, (images[:1],), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    declared = onnx_predictor(path, mean=MEAN, std=STD, outputs="logits")
    with pytest.raises(ValueError, match=r"returns probabilities .* outputs='probs'"):
        declared(images)
    predict = onnx_predictor(path, mean=MEAN, std=STD, outputs="probs")
    with torch.no_grad():
        np.testing.assert_allclose(predict(images), torch.softmax(toy(images), 1).numpy(),
                                   rtol=1e-5, atol=1e-6)
