"""Paper-scale models follow the Classifier contract, have the published sizes, and run in
channels_last and under bf16 autocast."""
from __future__ import annotations

import pytest
import torch

from scale_fixtures import one_thread

from slam_bench.models.mobilenet import mobilenet_v2
from slam_bench.models.resnet_cifar import resnet20, resnet56, resnet110, resnet_cifar
from slam_bench.models.resnet_imagenet import resnet18, resnet50
from slam_bench.models.text import embedding_bag_text, transformer_text

IMAGE_MODELS = {  # name: (factory, input_shape, options)
    # Small sides keep the CPU test fast; every model pools globally, so any side works.
    "resnet20": (resnet20, (3, 16, 16), {}),
    "resnet56": (resnet56, (3, 8, 8), {"width": 4}),
    "mobilenet_v2": (mobilenet_v2, (3, 16, 16), {"width_mult": 0.25, "small_input": True}),
    "resnet18": (resnet18, (3, 16, 16), {}),
    "resnet50_imagenet_stem": (resnet50, (3, 32, 32), {"stem": "imagenet"}),
}

_single_thread = pytest.fixture(autouse=True)(one_thread)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_image_model_contract(name):
    factory, shape, options = IMAGE_MODELS[name]
    torch.manual_seed(0)
    model = factory(shape, 7, **options).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        logits, feats = model(x), model.forward_features(x)
    assert logits.shape == (3, 7) and feats.shape == (3, model.feature_dim)
    torch.testing.assert_close(model.head(feats), logits)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("factory, published", [(resnet20, 0.27e6), (resnet56, 0.85e6), (resnet110, 1.7e6)])
def test_cifar_resnet_parameter_counts_match_the_paper(factory, published):
    # He et al. 2016, table 6 (option A shortcuts), 10 classes; the paper rounds to 2 digits.
    count = n_params(factory((3, 32, 32), 10))
    assert abs(count - published) / published < 0.02, count


def test_cifar_resnet_depth_is_6n_plus_2():
    model = resnet_cifar((3, 32, 32), 10, depth=56)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == 56  # weighted layers: the convs plus the linear head
    assert n_params(resnet_cifar((3, 32, 32), 10, depth=20, shortcut="B")) > n_params(resnet20((3, 32, 32), 10))


@pytest.mark.parametrize("factory, shape, published", [
    (resnet18, (3, 224, 224), 11_689_512), (resnet50, (3, 224, 224), 25_557_032),
    (mobilenet_v2, (3, 224, 224), 3_504_872)])
def test_imagenet_models_match_torchvision_parameter_counts(factory, shape, published):
    # torchvision's resnet18 / resnet50 / mobilenet_v2 with 1000 classes have exactly these
    # counts (its model documentation's "num_params"); equal counts pin the layer layout.
    assert n_params(factory(shape, 1000)) == published


def test_small_input_strides():
    # CIFAR strides keep an 8x8 map at the end of MobileNetV2 on 32x32 input (not 1x1), and the
    # small ResNet stem keeps 4x4; the ImageNet choices would shrink both to 1x1.
    for model, side in ((mobilenet_v2((3, 32, 32), 10, width_mult=0.25), 4),
                        (resnet18((3, 32, 32), 10), 4)):
        body = list(model.body.children())[:-2]  # drop pooling and flatten
        out = torch.nn.Sequential(*body).eval()(torch.zeros(1, 3, 32, 32))
        assert out.shape[-1] == side
    big = mobilenet_v2((3, 32, 32), 10, width_mult=0.25, small_input=False)
    out = torch.nn.Sequential(*list(big.body.children())[:-2]).eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape[-1] == 1


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "resnet18"])
def test_channels_last_gives_the_same_logits(name):
    factory, shape, options = IMAGE_MODELS[name]
    torch.manual_seed(0)
    model = factory(shape, 5, **options).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_training_step():
    torch.manual_seed(0)
    model = resnet20((3, 8, 8), 10, width=4).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    torch.nn.functional.cross_entropy(logits.float(), torch.arange(4)).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("factory", [transformer_text, embedding_bag_text])
def test_text_models_contract_and_padding_invariance(factory):
    torch.manual_seed(0)
    model = factory((16,), 2, vocab_size=50).eval()
    x = torch.randint(1, 50, (4, 12))
    x[1, 3:] = 0
    x[2] = 0  # a review with no known token at all
    with torch.no_grad():
        logits, feats = model(x), model.forward_features(x)
        # More trailing padding must not change anything.
        longer = model(torch.cat([x, torch.zeros(4, 4, dtype=torch.int64)], dim=1))
    assert logits.shape == (4, 2) and feats.shape == (4, model.feature_dim)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(longer, logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="vocab_size"):
        factory((16,), 2, vocab_size=None)


def test_transformer_trains_under_bf16_autocast():
    torch.manual_seed(0)
    model = transformer_text((8,), 2, vocab_size=30, d_model=32, n_heads=4, n_layers=1)
    x = torch.randint(0, 30, (6, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(x).float(), torch.tensor([0, 1] * 3))
    loss.backward()
    assert torch.isfinite(model.body.tok.weight.grad).all()


@pytest.mark.parametrize("call, match", [
    (lambda: resnet_cifar((3, 32, 32), 10, depth=21), "depth must be one of"),
    (lambda: resnet20((1, 32, 32), 10), r"input_shape must be \(3, H, W\)"),
    (lambda: resnet18((3, 32, 32), 10, stem="huge"), "stem must be"),
    (lambda: mobilenet_v2((3, 32, 32), 10, width_mult=0), "width_mult"),
    (lambda: transformer_text((8,), 2, vocab_size=30, d_model=30, n_heads=4), "multiple of n_heads"),
])
def test_bad_options_are_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_registered_image_model_standardises_uint8_and_augments_only_training_steps():
    from slam_bench.models import build_model
    from slam_bench.models.paper import ImageInput

    prep = ImageInput(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), pad=2, flip=True)
    x = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    plain = (x.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(prep.eval()(x), plain)
    prep.train()
    with torch.no_grad():  # prediction (e.g. MC-dropout passes) never augments
        torch.testing.assert_close(prep(x), plain)
    torch.manual_seed(0)
    assert not torch.equal(prep(x), plain)  # a training step does
    model = build_model("resnet20", (3, 8, 8), 4, width=4, pad=2, flip=True)
    out = model.eval()(torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8))
    assert out.shape == (2, 4) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="pad must be"):
        ImageInput((0.5,) * 3, (0.2,) * 3, pad=-1, flip=False)
