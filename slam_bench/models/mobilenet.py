"""MobileNetV2 (Sandler et al., CVPR 2018), with small-image stride choices.

The ImageNet network downsamples 32x (stem stride 2, then stages with stride 2 at the 2nd,
3rd, 4th and 6th settings). On 32 x 32 CIFAR images that leaves a 1 x 1 map after the third
stage, so for small inputs the stem and the 2nd setting use stride 1 (8x downsampling, as in
the common CIFAR ports of the network). `small_input=None` picks this when min(H, W) <= 64.
Input: float (N, 3, H, W); features (N, last_channel) after global average pooling.
"""
from __future__ import annotations

from torch import Tensor, nn

from slam_bench.models.base import Classifier

# (expansion t, output channels c, repeats n, first stride s) from the paper's table 2.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    # The paper's width rounding: to a multiple of 8, never more than 10% below v.
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(c_in, c_out, kernel, stride, groups=1, act=True) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return layers + [nn.ReLU6()] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers = _conv_bn(c_in, hidden, 1, 1) if expand != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, c_out, 1, 1, act=False)  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.residual else out


def mobilenet_v2(input_shape: tuple, num_classes: int, *, width_mult: float = 1.0,
                 small_input=None, last_channel: int = 1280, dropout: float = 0.0) -> Classifier:
    """MobileNetV2 for float (N, 3, H, W) input; features (N, last_channel * max(1, width_mult)).

    Args:
        width_mult: channel multiplier of every layer (the paper's alpha).
        small_input: use stride 1 in the stem and the 2nd setting (None: when min(H, W) <= 64).
        last_channel: width of the final 1x1 conv (the feature dimension at width_mult <= 1).
        dropout: dropout before the head (the paper's ImageNet model uses 0.2). It sits in
            the feature path, so it also acts in MC-dropout uncertainty estimates (UPS).
    """
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise ValueError(f"input_shape must be (3, H, W) for MobileNetV2, got {tuple(input_shape)}")
    if not (isinstance(width_mult, (int, float)) and width_mult > 0):
        raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    if small_input is None:
        small_input = min(input_shape[1:]) <= 64
    c_in = _make_divisible(32 * width_mult)
    c_last = _make_divisible(last_channel * max(1.0, width_mult))
    layers = _conv_bn(3, c_in, 3, 1 if small_input else 2)
    for idx, (t, c, n, s) in enumerate(SETTINGS):
        if small_input and idx == 1:
            s = 1
        c_out = _make_divisible(c * width_mult)
        for i in range(n):
            layers.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
            c_in = c_out
    layers += _conv_bn(c_in, c_last, 1, 1) + [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return Classifier(nn.Sequential(*layers), c_last, num_classes)
