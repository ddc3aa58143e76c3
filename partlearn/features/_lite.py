"""EfficientNet-Lite rebuilt for frozen inference: the same function, up to 2.6x faster on a CPU.

The ``efficientnet_lite_pytorch`` model runs every convolution as ``pad`` + ``conv`` +
``batch_norm`` + ``relu6``, four passes over the activations. Here each of them is one
convolution:

- the BatchNorm is folded into the convolution's weight and bias (eval statistics);
- TensorFlow's "same" padding needs no padded copy. At stride 1 it is symmetric, the
  convolution's own padding. At stride 2 an even side pads one pixel more after than
  before, which is the kernel grown by a leading zero row (column) with symmetric
  padding; the four (even, odd) variants are kept;
- on the CPU the convolution, its bias and the ReLU6 are one oneDNN call
  (``mkldnn::_convolution_pointwise``, the fused kernel torch's own compiler emits);
  elsewhere (CUDA, another dtype) ``conv2d`` then an in-place clamp.

The output equals the package model's up to float rounding (about 1e-5 of its scale;
``tests/features/test_backbones.py``). ``tap``: the head's map (``extract_features``) or the
output of block ``N`` (``blocks.N``), so that an earlier, finer map can be read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import PartlearnError


def _fused_kernel_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise")


class _ConvBN(nn.Module):
    """A 'same'-padded convolution with its BatchNorm folded in, then ReLU6 (``act``)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: bool):
        super().__init__()
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        kh, kw = weight.shape[-2:]
        if kh % 2 == 0 or kw % 2 == 0 or tuple(conv.dilation) != (1, 1) \
                or conv.stride[0] != conv.stride[1] or conv.stride[0] > 2:
            raise PartlearnError(f"unexpected EfficientNet-Lite convolution {conv}")
        self.stride, self.groups, self.act = conv.stride[0], conv.groups, act
        self.padding = [(kh - 1) // 2, (kw - 1) // 2]
        self.register_buffer("bias", bias.detach().clone())
        # weight_HW: H, W = 1 where that side of the input is even (stride 2 only)
        for eh in (0, 1) if self.stride == 2 else (0,):
            for ew in (0, 1) if self.stride == 2 else (0,):
                self.register_buffer(f"weight_{eh}{ew}",
                                     F.pad(weight, [ew, 0, eh, 0]).detach().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            h, w = x.shape[-2:]
            weight = getattr(self, f"weight_{1 - h % 2}{1 - w % 2}")
        else:
            weight = self.weight_00
        stride = [self.stride, self.stride]
        if x.device.type == "cpu" and x.dtype == torch.float32 and _fused_kernel_available():
            attr, scalars = ("hardtanh", [0.0, 6.0]) if self.act else ("none", [])
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, self.bias, self.padding, stride, [1, 1], self.groups, attr, scalars,
                "")
        y = F.conv2d(x, weight.to(x.dtype), self.bias.to(x.dtype), stride, self.padding, 1,
                     self.groups)
        return y.clamp_(0, 6) if self.act else y


class _Block(nn.Module):
    """An MBConv block without squeeze-excitation (EfficientNet-Lite has none)."""

    def __init__(self, block):
        super().__init__()
        a = block._block_args
        if block.has_se or not isinstance(block._swish, nn.ReLU6):
            raise PartlearnError("unexpected EfficientNet-Lite block (squeeze-excitation or "
                                 "an activation other than ReLU6)")
        self.expand = _ConvBN(block._expand_conv, block._bn0, True) if a.expand_ratio != 1 \
            else None
        self.depthwise = _ConvBN(block._depthwise_conv, block._bn1, True)
        self.project = _ConvBN(block._project_conv, block._bn2, False)
        # as the package decides it: a stage's first block has its stride as a list, [1]
        self.skip = bool(a.id_skip and a.stride == 1 and a.input_filters == a.output_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return y.add_(x) if self.skip else y


class LiteInference(nn.Module):
    """The frozen EfficientNet-Lite ``net`` up to ``tap``: ``"extract_features"`` (the
    head's map) or ``"blocks.N"`` (block ``N``'s output)."""

    def __init__(self, net: nn.Module, tap: str = "extract_features"):
        super().__init__()
        if not isinstance(net._swish, nn.ReLU6):
            raise PartlearnError("unexpected EfficientNet-Lite stem (activation not ReLU6)")
        n_blocks = len(net._blocks)
        last = n_blocks - 1 if tap == "extract_features" else int(tap.removeprefix("blocks."))
        self.stem = _ConvBN(net._conv_stem, net._bn0, True)
        self.blocks = nn.Sequential(*(_Block(b) for b in list(net._blocks)[:last + 1]))
        self.head = _ConvBN(net._conv_head, net._bn1, True) if tap == "extract_features" \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return x if self.head is None else self.head(x)


def block_strides(net: nn.Module) -> list[int]:
    """The stride of every block's output (the stem's 2 included)."""
    strides, total = [], 2
    for block in net._blocks:
        s = block._block_args.stride
        total *= s if isinstance(s, int) else s[0]
        strides.append(total)
    return strides
