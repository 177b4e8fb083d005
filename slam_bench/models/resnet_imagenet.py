"""ResNet-18 / ResNet-50 (He et al., CVPR 2016) in the torchvision layout, written here.

torchvision is not a dependency, so the networks are defined in this file: BasicBlock
(ResNet-18/34) or Bottleneck with the stride on the 3x3 conv (the "v1.5" variant torchvision
uses), 1x1 projection shortcuts when the shape changes, zero-init of each block's last BN
gamma optional (`zero_init_residual`, as torchvision's flag). No pretrained weights.

Stem: "imagenet" is the 7x7 stride-2 conv plus 3x3 stride-2 max-pool (for ~224 px input);
"small" is a 3x3 stride-1 conv without pooling (for 32-64 px input, where the ImageNet stem
would leave 2x2 maps at the end); "small_s2" is the same conv with stride 2 (64 px input at
the cost per pixel of "small" on 32 px: 4x fewer FLOPs, 4x4 final maps).
`stem="auto"` picks "small" when min(H, W) < 128.
Input: float (N, 3, H, W); features (N, 512) for ResNet-18, (N, 2048) for ResNet-50.
"""
from __future__ import annotations

from torch import Tensor, nn

from slam_bench.models.base import Classifier

LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3))}


def _bn_conv(c_in, c_out, kernel, stride=1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


class Block(nn.Module):
    def __init__(self, kind: str, c_in: int, planes: int, stride: int):
        super().__init__()
        if kind == "basic":
            self.expansion = 1
            layers = _bn_conv(c_in, planes, 3, stride) + [nn.ReLU(inplace=True)] + _bn_conv(planes, planes, 3)
        else:
            self.expansion = 4
            layers = (_bn_conv(c_in, planes, 1) + [nn.ReLU(inplace=True)]
                      + _bn_conv(planes, planes, 3, stride) + [nn.ReLU(inplace=True)]
                      + _bn_conv(planes, planes * 4, 1))
        self.residual = nn.Sequential(*layers)
        c_out = planes * self.expansion
        self.shortcut = (nn.Sequential(*_bn_conv(c_in, c_out, 1, stride))
                         if stride != 1 or c_in != c_out else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


def resnet(input_shape: tuple, num_classes: int, *, depth: int = 18, stem: str = "auto",
           zero_init_residual: bool = False, dropout: float = 0.0) -> Classifier:
    """A torchvision-style ResNet of `depth` in (18, 34, 50, 101) for float (N, 3, H, W) input.

    `dropout` (not in torchvision) acts on the pooled features, for MC-dropout uncertainty.
    """
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise ValueError(f"input_shape must be (3, H, W) for a ResNet, got {tuple(input_shape)}")
    if depth not in LAYERS:
        raise ValueError(f"depth must be one of {sorted(LAYERS)}, got {depth!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    if stem == "auto":
        stem = "small" if min(input_shape[1:]) < 128 else "imagenet"
    if stem == "imagenet":
        layers = _bn_conv(3, 64, 7, 2) + [nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    elif stem in ("small", "small_s2"):
        layers = _bn_conv(3, 64, 3, 1 if stem == "small" else 2) + [nn.ReLU(inplace=True)]
    else:
        raise ValueError(f"stem must be 'auto', 'imagenet', 'small' or 'small_s2', got {stem!r}")
    kind, counts = LAYERS[depth]
    c_in = 64
    for stage, n in enumerate(counts):
        planes = 64 * 2 ** stage
        for i in range(n):
            block = Block(kind, c_in, planes, 2 if (stage > 0 and i == 0) else 1)
            if zero_init_residual:
                nn.init.zeros_(block.residual[-1].weight)
            layers.append(block)
            c_in = planes * block.expansion
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         *([nn.Dropout(dropout)] if dropout else []))
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            # torchvision's init; PyTorch's default conv init is tuned for no BN.
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return Classifier(body, c_in, num_classes)


def resnet18(input_shape, num_classes, **options) -> Classifier:
    return resnet(input_shape, num_classes, depth=18, **options)


def resnet50(input_shape, num_classes, **options) -> Classifier:
    return resnet(input_shape, num_classes, depth=50, **options)
