"""Registry entries for the paper-scale models, wrapped for uint8 images on a GPU.

The suites keep images as uint8 on the training device and call the model on them directly,
so each image model here starts with `ImageInput`: uint8 -> float, per-channel
standardisation with the suite's fixed `mean` / `std`, and, only in a training step (train
mode and autograd on), a random crop of the `pad`-padded image and a horizontal flip (the
standard CIFAR augmentation, batched on device). Prediction (`torch.no_grad`) never augments,
so MC-dropout passes see the plain image.

On CUDA the network body runs in `channels_last` and under bf16 autocast (options
`channels_last`, `bf16`); features are cast back to float32 so the head, the losses and the
fused SLaM kernel see float32. On CPU both options are inert.

Registered names: resnet20, resnet56, resnet110 (CIFAR ResNets), mobilenet_v2, resnet18,
resnet50 (torchvision layout), text_transformer, text_bag.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from slam_bench.data.augment import random_crop_flip
from slam_bench.models import register_model
from slam_bench.models.base import Classifier
from slam_bench.models.mobilenet import mobilenet_v2
from slam_bench.models.resnet_cifar import resnet_cifar
from slam_bench.models.resnet_imagenet import resnet
from slam_bench.models.text import embedding_bag_text, transformer_text

# Published per-channel statistics on the 0-1 scale (used unless a suite passes its own).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageInput(nn.Module):
    """uint8 (N, 3, H, W) -> standardised float32 (N, 3, H, W), augmented in training steps."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad: int, flip: bool):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must be 3 per-channel values (std > 0), got {mean}, {std}")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be an int >= 0 (0: no random crop), got {pad!r}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.pad, self.flip = pad, bool(flip)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled() and (self.pad or self.flip):
            x = random_crop_flip(x, self.pad, self.flip)
        return (x.float() - self.mean) / self.std


class GPUBody(nn.Module):
    """`prep` then `net`, the latter in channels_last / bf16 autocast on CUDA; float32 out."""

    def __init__(self, prep: nn.Module, net: nn.Module, channels_last: bool, bf16: bool):
        super().__init__()
        self.prep, self.net = prep, net
        self.channels_last, self.bf16 = bool(channels_last), bool(bf16)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prep(x)
        cuda = x.is_cuda
        if cuda and self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and self.bf16):
            f = self.net(x)
        return f.float()


def _image(build: Callable[..., Classifier]):
    """A registry factory: the network from `build`, behind ImageInput and GPUBody."""

    def factory(input_shape, num_classes: int, *, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD, pad: int = 0, flip: bool = False,
                channels_last: bool = True, bf16: bool = True, **options) -> Classifier:
        inner = build(tuple(input_shape), num_classes, **options)
        body = GPUBody(ImageInput(mean, std, pad, flip), inner.body, channels_last, bf16)
        model = Classifier(body, inner.feature_dim, num_classes)
        model.head = inner.head
        return model

    factory.__doc__ = (f"{build.__name__} behind ImageInput (options mean, std, pad, flip) and "
                       f"GPUBody (channels_last, bf16); other options go to {build.__name__}.")
    return factory


def _text(build: Callable[..., Classifier]):
    def factory(input_shape, num_classes: int, *, bf16: bool = True, **options) -> Classifier:
        inner = build(tuple(input_shape), num_classes, **options)
        model = Classifier(GPUBody(nn.Identity(), inner.body, False, bf16), inner.feature_dim,
                           num_classes)
        model.head = inner.head
        return model

    factory.__doc__ = f"{build.__name__} with bf16 autocast on CUDA (option bf16)."
    return factory


def _depth(fn, depth):
    def build(input_shape, num_classes, **options):
        return fn(input_shape, num_classes, depth=depth, **options)

    build.__name__ = f"{fn.__name__}{depth}"
    return build


for _name, _build in (("resnet20", _depth(resnet_cifar, 20)), ("resnet56", _depth(resnet_cifar, 56)),
                      ("resnet110", _depth(resnet_cifar, 110)), ("mobilenet_v2", mobilenet_v2),
                      ("resnet18", _depth(resnet, 18)), ("resnet50", _depth(resnet, 50))):
    register_model(_name, _image(_build))
register_model("text_transformer", _text(transformer_text))
register_model("text_bag", _text(embedding_bag_text))
