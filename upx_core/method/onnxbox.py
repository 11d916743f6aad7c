"""ONNX Runtime as a black box: export a classifier to ONNX, and query a session (issue 11).

An ONNX file run by ONNX Runtime has no torch graph and no gradient: the query-only optimizer
(:func:`upx_core.method.blackbox.optimize_masks_blackbox`) is the only way to explain it.
:func:`export_onnx` writes a :class:`~upx_core.method.models.Classifier`'s network
(normalized images -> logits) with its preprocessing in the file's metadata, so that
:func:`onnx_predictor` needs no flags for it; a user's own ``.onnx`` file needs the mean, std and
input size it was trained with.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import SetupError
from ..files import new_file_mode
from .blackbox import OUTPUTS, Predict
from .models import Classifier, imagenet_categories, looks_like_probabilities

__all__ = ["export_onnx", "onnx_predictor"]


def _require(module: str):
    """Import ``module`` of the ``onnx`` extra, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise SetupError(f"ONNX support needs the package {module}: pip install 'upx[onnx]' "
                           "(or pip install onnx onnxruntime)") from None

# The keys export_onnx writes into the model's metadata_props (JSON values).
META_KEYS = ("mean", "std", "input_size", "resize_size", "outputs", "name")


def export_onnx(model: Classifier, path: str | os.PathLike, opset: int = 17) -> Path:
    """Write ``model.net`` (normalized ``[N, 3, S, S]`` images -> ``[N, C]`` logits, any N) to
    ``path`` with the mean, std, input and resize size, output kind and name as metadata.

    The file appears whole or not at all (written beside ``path``, then renamed). Uses torch's
    TorchScript-based exporter: it needs no extra package (the torch.export-based one needs
    ``onnxscript``) and gives outputs equal to torch's within float tolerance (tests).
    """
    onnx = _require("onnx")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the ONNX file's name must end in .onnx, got {path.name!r}")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    net = model.net
    was_training = net.training
    net.eval()
    example = torch.rand(1, 3, model.input_size, model.input_size,
                         device=next(net.parameters()).device)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
            torch.onnx.export(net, (example,), tmp, dynamo=False, input_names=["images"],
                              output_names=["logits"], opset_version=opset,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        proto = onnx.load(tmp)
        meta = {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist(),
                "input_size": model.input_size, "resize_size": model.resize_size,
                "outputs": "logits", "name": model.name}
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = f"upx.{key}", json.dumps(value)
        onnx.save(proto, tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp's 0600 would ignore the umask
        os.replace(tmp, path)
    finally:
        net.train(was_training)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def onnx_predictor(
    path: str | os.PathLike,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: int | None = None,
    outputs: str | None = None,
    categories: Sequence[str] | None = None,
    threads: int | None = None,
    batch_size: int | None = 8,
    strict: bool = False,
) -> Predict:
    """``predict(images [N, 3, S, S] in [0, 1]) -> [N, C]`` (NumPy float32) from an ONNX
    Runtime session on the CPU: images are normalized with ``(x - mean) / std`` and fed to the
    model's single input.

    mean, std, input_size, outputs: the preprocessing and output kind (``"logits"`` or
    ``"probs"``); each defaults to what :func:`export_onnx` stored in the file, and must be
    given for any other file. ``categories`` names the outputs (default: ImageNet's for 1000
    outputs). ``threads``: ONNX Runtime's intra-op threads (default: its own choice).
    ``batch_size``: images per ``session.run`` (``None``: all of a call's at once; a file that
    fixes its batch size, as ``torch.onnx.export`` writes without ``dynamic_axes``, gets
    exactly that many, the last run padded). The default
    8 is where ONNX Runtime's CPU throughput peaked for EfficientNet-Lite0 on this project's
    2-core CPU; at 32 it answered about 40 % fewer images per second
    (``benchmarks/blackbox_throughput.py``), and the query-only optimizer asks for 2 x samples
    images per mask at once.
    ``strict`` (``upx explain --onnx``): a mean, std, input size or output kind given that
    contradicts what the file holds is refused, naming it as upx explain's flag (``--mean``).
    The callable carries ``outputs``, ``categories``, ``input_size`` and ``resize_size``, and
    in ``metadata`` what the file itself holds of ``META_KEYS`` (empty for a file upx did not
    export).
    """
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for a bad file
        raise ValueError(f"cannot read ONNX model {path}: {str(err).splitlines()[0]}") from None
    stored = {k[len("upx."):]: json.loads(v)
              for k, v in session.get_modelmeta().custom_metadata_map.items()
              if k.startswith("upx.") and k[len("upx."):] in META_KEYS}
    given = {"mean": mean, "std": std, "input_size": input_size, "outputs": outputs}
    for key, value in given.items() if strict else ():
        held = stored.get(key)
        if value is not None and held is not None and (
                value != held if isinstance(held, str) else
                not np.allclose(np.asarray(value, float), np.asarray(held, float))):
            def words(v):
                return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{path} holds its own {key.replace('_', ' ')} ({words(held)}); "
                             f"{flag} {words(value)} contradicts it: leave {flag} out")
    mean = mean if mean is not None else stored.get("mean")
    std = std if std is not None else stored.get("std")
    outputs = outputs or stored.get("outputs")
    missing = [n for n, v in (("mean", mean), ("std", std), ("outputs", outputs)) if v is None]
    if missing:
        raise ValueError(f"{path} holds no upx metadata: give its {', '.join(missing)} "
                         "(the preprocessing it was trained with; outputs: logits or probs)")
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, numbers.Integral)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ValueError(f"mean and std need 3 values with std > 0, got {mean}, {std}")
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{path} has {len(inputs)} inputs; upx queries models with one "
                         "image input")
    shape = inputs[0].shape  # e.g. ['batch', 3, 224, 224]; symbolic sizes are strings
    fixed = [s if isinstance(s, int) else None for s in shape]
    if len(shape) != 4 or fixed[1] not in (None, 3):
        raise ValueError(f"{path} takes input of shape {shape}; upx needs [N, 3, H, W]")
    model_size = fixed[2] if fixed[2] == fixed[3] else None
    size = input_size or stored.get("input_size") or model_size
    if size is None:
        raise ValueError(f"{path} does not fix its image size; give its input size")
    if model_size is not None and int(size) != model_size:
        raise ValueError(f"{path} takes {model_size}x{model_size} images, but the input size "
                         f"given is {size}")
    size = int(size)
    name = inputs[0].name
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)

    # A file exported without dynamic axes (torch.onnx.export's default) fixes its batch size:
    # it is then fed exactly that many images per run, the last chunk padded and cut back.
    fixed_batch = fixed[0]

    def run(chunk: np.ndarray) -> np.ndarray:
        if fixed_batch is None or len(chunk) == fixed_batch:
            return session.run(None, {name: chunk})[0]
        pad = np.zeros((fixed_batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
        return session.run(None, {name: np.concatenate([chunk, pad])})[0][:len(chunk)]

    def predict(images):
        x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise ValueError(f"the ONNX model takes [N, 3, {size}, {size}] images, got "
                             f"{list(x.shape)}")
        x = ((x - m) / s).astype(np.float32)
        step = fixed_batch or batch_size or max(len(x), 1)
        parts = [run(x[i:i + step]) for i in range(0, len(x), step) or [0]]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if outputs == "logits" and looks_like_probabilities(torch.from_numpy(out)):
            # read as logits, probabilities would be softmaxed twice: wrong, without a warning
            raise ValueError(f"{path} returns probabilities (non-negative, each row sums to 1) "
                             "but is read as logits: give outputs='probs' (upx explain "
                             "--outputs probs)")
        return out

    n_out = session.get_outputs()[0].shape[-1]
    predict.outputs = outputs
    predict.metadata = stored
    predict.categories = (list(categories) if categories is not None
                          else imagenet_categories() if n_out == 1000 else None)
    predict.input_size = size
    predict.resize_size = int(stored.get("resize_size") or round(size * 256 / 224))
    return predict
