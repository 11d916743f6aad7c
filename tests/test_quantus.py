"""UndesirablePixels as a Quantus ``explain_func`` (issue 10): a real Quantus metric on two real
sample images and the offline EfficientNet-Lite0, calling ``quantus_explain_func`` as Quantus
calls any explain_func. Skipped only where quantus is not installed (the ``test`` extra pins it).
"""

from __future__ import annotations

import numpy as np
import pytest

from upx_core import UndesirablePixels, quantus_explain_func

quantus = pytest.importorskip("quantus", reason="quantus is not installed: pip install "
                              "'upx[test]' (it pins quantus==0.6.0)")

AFRICAN_ELEPHANT = 386
KWARGS = {"iterations": 3, "device": "cpu"}


@pytest.fixture(scope="module")
def batch(crops):
    """Quantus' inputs: channel-first NumPy images in [0, 1] and NumPy class indices."""
    return crops.numpy(), np.array([AFRICAN_ELEPHANT, AFRICAN_ELEPHANT])


@pytest.fixture(scope="module")
def reference(model, crops):
    return UndesirablePixels(model).attribute(crops, target=AFRICAN_ELEPHANT, **KWARGS)


def _faithfulness(model, batch, explain_func, **explain_kwargs):
    """FaithfulnessCorrelation per image, its random pixel subsets drawn from a fixed seed."""
    x, y = batch
    metric = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=400, return_aggregate=False,
                                             disable_warnings=True)
    state = np.random.get_state()
    np.random.seed(0)
    try:
        return np.array(metric(model=model, x_batch=x, y_batch=y, explain_func=explain_func,
                               explain_func_kwargs={**KWARGS, **explain_kwargs},
                               channel_first=True, softmax=True, device="cpu"))
    finally:
        np.random.set_state(state)


def test_the_explain_func_is_the_attribution_one_value_per_pixel(model, batch, reference):
    x, y = batch
    attr = quantus_explain_func(model=model, inputs=x, targets=y, **KWARGS)
    assert isinstance(attr, np.ndarray) and attr.dtype == np.float32
    assert attr.shape == (2, 1, 80, 80)
    np.testing.assert_array_equal(attr, reference[:, :1].numpy())
    assert attr.max() > 0  # the masks moved: some pixels hinder the elephant
    inverted = quantus_explain_func(model=model, inputs=x, targets=y, invert=True, **KWARGS)
    np.testing.assert_array_equal(inverted, -attr)
    with pytest.raises(ValueError, match="channel_first=True"):
        quantus_explain_func(model=model, inputs=x.transpose(0, 2, 3, 1), targets=y, **KWARGS)


def test_faithfulness_correlation_runs_on_the_explain_func(model, batch, reference):
    calls = []

    def recording(model, inputs, targets, **kwargs):
        out = quantus_explain_func(model, inputs, targets, **kwargs)
        calls.append((inputs, targets, kwargs, out))
        return out

    scores = _faithfulness(model, batch, recording)
    assert scores.shape == (2,) and np.isfinite(scores).all()
    assert (np.abs(scores) <= 1).all()  # Pearson correlations
    # Quantus called it once, as documented: NumPy images and class indices, our kwargs
    ((inputs, targets, kwargs, out),) = calls
    np.testing.assert_array_equal(inputs, batch[0])
    np.testing.assert_array_equal(targets, batch[1])
    assert kwargs == KWARGS
    np.testing.assert_array_equal(out, reference[:, :1].numpy())
    # the metric scored this attribution: the inverted one, on the same random subsets,
    # correlates with the prediction drops with the opposite sign
    inverted = _faithfulness(model, batch, quantus_explain_func, invert=True)
    np.testing.assert_allclose(inverted, -scores, atol=1e-6)


def test_numpy_2_lacks_the_trapz_quantus_auc_metrics_call_and_the_alias_works(monkeypatch):
    """What quantus_explain_func's docstring says about quantus 0.6.0 under NumPy 2."""
    if hasattr(np, "trapz"):
        pytest.skip(f"numpy {np.__version__} still has trapz")
    with pytest.raises(AttributeError, match="trapz"):
        quantus.helpers.utils.calculate_auc(np.array([1.0, 0.5]))
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    assert quantus.helpers.utils.calculate_auc(np.array([1.0, 0.5])) == pytest.approx(0.75)


@pytest.mark.parametrize("name, kwargs", [
    ("MaxSensitivity", {"lower_bound": 0.2}),      # uniform noise in +-0.2 (Quantus's default)
    ("AvgSensitivity", {"lower_bound": 0.2}),
    ("LocalLipschitzEstimate", {"perturb_std": 0.1}),  # Gaussian noise, std 0.1 (its default)
])
def test_robustness_metrics_run_on_noisy_inputs(model, batch, name, kwargs):
    # their noise takes the inputs out of [0, 1]; the explain func clamps them back (TOLERANCE)
    x, y = batch
    metric = getattr(quantus, name)(nr_samples=2, return_aggregate=False, disable_warnings=True,
                                    **kwargs)
    state = np.random.get_state()
    np.random.seed(0)
    try:
        scores = np.array(metric(model=model, x_batch=x, y_batch=y,
                                 explain_func=quantus_explain_func, explain_func_kwargs=KWARGS,
                                 channel_first=True, softmax=True, device="cpu"))
    finally:
        np.random.set_state(state)
    assert scores.shape == (2,) and np.isfinite(scores).all() and (scores >= 0).all()


def test_slightly_out_of_range_inputs_are_explained_as_the_clamped_image(model, batch):
    x, y = batch
    noisy = x + np.where(np.arange(x.size).reshape(x.shape) % 2, 0.3, -0.3).astype(np.float32)
    assert noisy.min() < 0 and noisy.max() > 1
    np.testing.assert_array_equal(
        quantus_explain_func(model=model, inputs=noisy, targets=y, **KWARGS),
        quantus_explain_func(model=model, inputs=noisy.clip(0, 1), targets=y, **KWARGS))
    # far outside: refused, and the model holds its normalization, so the message does not
    # ask for one the user passed; it names the range
    with pytest.raises(ValueError, match=r"inputs range over \[-0\.9.*more than 0.5 outside"):
        quantus_explain_func(model=model, inputs=2 * x - 1, targets=y, **KWARGS)
    mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
    with pytest.raises(ValueError, match="once the mean and std given are undone"):
        quantus_explain_func(model=model.net, inputs=(x - 0.5) / 0.5 * 4, targets=y, mean=mean,
                             std=std, **KWARGS)
