"""AlexNet model, convert() and reference-weight loading.

Expensive equivalence checks run a width-1/8 model (same structure, every layer 8x
narrower) in float64 on CPU; one full-size check each covers the real shapes. The CUDA
tests skip (with the reason) without a GPU. test_towers.py tests the two-device plumbing
(TowerPair's state_dict hooks, TowerRunner) on its own.
"""

import copy
import io
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alexnet_cuda
from alexnet_cuda.convert import convert
from alexnet_cuda.models import AlexNet, LRNParams, TowerPair, reference_alexnet

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

SMALL = 0.125  # width multiplier for the expensive equivalence tests
# A strong LRN (alpha 1 instead of 1e-4) so that normalization, and which channels share a
# window, visibly changes the output at these activation sizes.
STRONG_LRN = LRNParams(alpha=1.0)
TOWERS_CPU = ("cpu", "cpu")


def images(n=2, size=227, dtype=torch.float32, scale=1.0):
    return torch.randn(n, 3, size, size, dtype=dtype) * scale


def small(**kw):
    kw.setdefault("fused", False)
    kw.setdefault("width", SMALL)
    kw.setdefault("lrn", STRONG_LRN)
    return AlexNet(**kw)


def canonical_grads(model):
    """Parameter gradients keyed like the state_dict (tower halves concatenated)."""
    grads = {}
    for name, p in model.named_parameters():
        grads.setdefault(re.sub(r"towers\.[01]\.", "", name), []).append(p.grad)
    return {k: torch.cat([g.to(v[0].device) for g in v]) for k, v in grads.items()}


def assert_close_rel(actual, expected, rtol):
    err = (actual - expected).abs().max().item()
    ref = expected.abs().max().item()
    assert err <= rtol * ref, f"max abs error {err:.3g} vs max |expected| {ref:.3g}"


# --- structure -------------------------------------------------------------------------


def test_parameter_count():
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(AlexNet(fused=False)) == 60_965_224
    assert n(AlexNet(fused=False, devices=TOWERS_CPU)) == 60_965_224
    assert n(reference_alexnet()) == 60_965_224


def test_paper_init_and_bias_variant():
    torch.manual_seed(0)
    model = AlexNet(fused=False)
    sd = model.state_dict()
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for key, value in sd.items():
        layer = key.split(".")[1]
        if key.endswith("bias"):
            assert torch.all(value == (1.0 if layer in ones else 0.0)), key
        else:
            assert abs(value.std().item() - 0.01) < 1e-3 and abs(value.mean().item()) < 1e-3, key
    model = AlexNet(fused=False, bias_init=0.1, width=SMALL)
    assert torch.all(model.classifier.fc6.bias == 0.1)
    assert torch.all(model.features.conv1.bias == 0.0)


@pytest.mark.parametrize("size", [227, 224])
def test_output_shape(size):
    torch.manual_seed(0)
    model = AlexNet(fused=False, image_size=size, num_classes=10).eval()
    maps = {}
    model.features.conv1.register_forward_hook(lambda m, i, o: maps.update(conv1=o.shape))
    with torch.no_grad():
        out = model(images(1, size))
    assert out.shape == (1, 10)
    assert maps["conv1"] == (1, 96, 55, 55)
    assert model.features.conv1.padding == ((2, 2) if size == 224 else (0, 0))


def test_state_dict_keys_identical_across_placements():
    single = small().state_dict()
    towers = small(devices=TOWERS_CPU).state_dict()
    assert list(single) == list(towers)
    assert all(single[k].shape == towers[k].shape for k in single)
    assert single["features.conv2.weight"].shape == (32, 6, 5, 5)  # grouped layout
    full = AlexNet(fused=False, devices=TOWERS_CPU).state_dict()
    assert full["features.conv2.weight"].shape == (256, 48, 5, 5)
    assert full["features.conv3.weight"].shape == (384, 256, 3, 3)
    assert full["classifier.fc6.weight"].shape == (4096, 9216)


# --- two towers on two devices == grouped single device ----------------------------------


def test_towers_match_grouped_fp64():
    torch.manual_seed(0)
    single = small().double().eval()
    towers = small(devices=TOWERS_CPU).double().eval()
    towers.load_state_dict(single.state_dict())
    x = images(2, dtype=torch.float64)
    xs, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yt = single(xs), towers(xt)
    torch.testing.assert_close(yt, ys, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ys)
    (ys * w).sum().backward()
    (yt * w).sum().backward()
    torch.testing.assert_close(xt.grad, xs.grad, rtol=1e-10, atol=1e-14)
    gs, gt = canonical_grads(single), canonical_grads(towers)
    assert gs.keys() == gt.keys()
    for key in gs:
        torch.testing.assert_close(gt[key], gs[key], rtol=1e-10, atol=1e-14, msg=key)


def assert_full_size_forward_matches(model, reference, rtol):
    """model, given reference's weights, computes reference's function on one 227x227 image."""
    model.eval().load_state_dict(reference.state_dict())
    x = images(1, scale=50.0)
    with torch.no_grad():
        assert_close_rel(model(x), reference.eval()(x), rtol)


def test_towers_match_grouped_full_size():
    torch.manual_seed(0)
    assert_full_size_forward_matches(AlexNet(fused=False, devices=TOWERS_CPU), AlexNet(fused=False), 1e-5)


def test_towers_odd_classes_and_train_mode():
    torch.manual_seed(0)
    towers = small(devices=TOWERS_CPU, num_classes=11)
    assert towers.classifier.fc8.towers[0].out_features == 6
    assert towers.state_dict()["classifier.fc8.weight"].shape == (11, 512)
    out = towers(images(2))  # train mode: dropout in each tower
    assert out.shape == (2, 11)
    out.sum().backward()
    single = small(num_classes=11).eval()
    single.load_state_dict(towers.state_dict())
    x = images(1)
    with torch.no_grad():
        torch.testing.assert_close(single(x), towers.eval()(x), rtol=1e-4, atol=1e-6)


def test_per_tower_lrn_differs_from_one_lrn_over_all_channels():
    """The reference model's LRN over all 96 maps is a different function (documented)."""
    torch.manual_seed(0)
    model = small().eval()
    across = copy.deepcopy(model)
    across.features.pool1.lrn_groups = 1
    across.features.pool2.lrn_groups = 1
    x = images(1)
    with torch.no_grad():
        assert not torch.allclose(model(x), across(x), rtol=1e-3, atol=0)


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_loads_across_placements():
    torch.manual_seed(0)
    single = small().eval()
    towers = small(devices=TOWERS_CPU).eval()
    x = images(1)
    buf = io.BytesIO()
    torch.save(single.state_dict(), buf)
    buf.seek(0)
    towers.load_state_dict(torch.load(buf))
    with torch.no_grad():
        torch.testing.assert_close(towers(x), single(x), rtol=1e-4, atol=1e-6)
    # and back: two towers -> a fresh single-device model
    torch.manual_seed(1)
    again = small().eval()
    again.load_state_dict(towers.state_dict())
    for key, value in single.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    # towers -> towers, and the halves really are the rows of the canonical tensor
    other = small(devices=TOWERS_CPU)
    other.load_state_dict(towers.state_dict())
    w = single.state_dict()["features.conv2.weight"]
    assert torch.equal(other.features.conv2.towers[0].weight, w[:16])
    assert torch.equal(other.features.conv2.towers[1].weight, w[16:])


def test_checkpoint_load_errors_name_canonical_keys():
    towers = small(devices=TOWERS_CPU)
    sd = small().state_dict()
    del sd["features.conv3.weight"]
    result = towers.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["features.conv3.weight"]
    sd = small(width=0.25).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch for features.conv1.weight"):
        towers.load_state_dict(sd)
    assert isinstance(towers.features.conv1, TowerPair)


def test_load_reference_state_dict():
    torch.manual_seed(0)
    ref = reference_alexnet().eval()
    model = AlexNet(fused=False).eval()
    model.load_reference_state_dict(ref.state_dict())
    assert torch.equal(model.features.conv4.weight, ref.features[10].weight)
    assert torch.equal(model.classifier.fc8.bias, ref.classifier[6].bias)
    x = images(1, scale=1000.0)  # big activations: the LRN matters
    with torch.no_grad():
        y_ref, y_towers = ref(x), model(x)
        model.features.pool1.lrn_groups = 1  # one LRN over all channels, like the reference
        model.features.pool2.lrn_groups = 1
        y_across = model(x)
    torch.testing.assert_close(y_across, y_ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(y_towers, y_ref, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="unexpected key"):
        model.load_reference_state_dict({"features.3.weight": torch.zeros(1)})


# --- options ------------------------------------------------------------------------------


def test_paper_alpha_and_no_lrn():
    torch.manual_seed(0)
    literal = small(lrn=LRNParams(alpha=2e-3, paper_alpha=True)).eval()
    scaled = small(lrn=LRNParams(alpha=1e-2)).eval()  # 5 x 2e-3 in PyTorch's alpha/n convention
    scaled.load_state_dict(literal.state_dict())
    x = images(1, scale=30.0)
    with torch.no_grad():
        torch.testing.assert_close(literal(x), scaled(x))
    plain = small(lrn=None).eval()
    with torch.no_grad():
        assert plain(x).shape == (1, 1000)


@pytest.mark.parametrize("fused", [False, True], ids=["stock", "fused"])
def test_channels_last_matches(fused):
    torch.manual_seed(0)
    model = small(fused=fused).eval()
    x = images(2)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True], ids=["stock", "fused"])
def test_bf16_autocast(fused):
    torch.manual_seed(0)
    model = small(fused=fused, lrn=LRNParams()).eval()
    x = images(2)
    with torch.no_grad():
        ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    assert_close_rel(out.float(), ref, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().sum().backward()
    assert model.features.conv1.weight.grad.dtype == torch.float32


# --- fused == unfused ------------------------------------------------------------------


@pytest.mark.parametrize("devices", [None, TOWERS_CPU], ids=["single", "towers"])
def test_fused_matches_unfused(devices):
    # float64: in fp32 the two stages' LRN values differ by rounding, so near-tied pooling
    # windows can route a gradient to a different (equally valid) position.
    torch.manual_seed(0)
    stock = small(devices=devices, dropout=0.0).double()
    fused = small(devices=devices, dropout=0.0, fused=True).double()
    assert list(fused.state_dict()) == list(stock.state_dict())
    fused.load_state_dict(stock.state_dict())
    x, y = images(2).double(), torch.randint(0, 1000, (2,))
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) for m in (stock, fused)]
    for step in range(3):
        losses = []
        for model, opt in zip((stock, fused), opts):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
        if step == 0:
            gs, gf = canonical_grads(stock), canonical_grads(fused)
            for key in gs:
                assert_close_rel(gf[key], gs[key], 1e-4)
        for opt in opts:
            opt.step()


def test_fused_full_size_forward():
    torch.manual_seed(0)
    assert_full_size_forward_matches(AlexNet(), AlexNet(fused=False), 1e-4)


def test_compile_fullgraph():
    torch.manual_seed(0)
    model = small(fused=True, lrn=LRNParams()).eval()
    x = images(1)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
    compiled.train()
    compiled(x).sum().backward()  # backward traced too
    assert model.features.conv1.weight.grad is not None


# --- convert() ---------------------------------------------------------------------------


def test_convert_reference_alexnet():
    fnn = alexnet_cuda.nn
    torch.manual_seed(0)
    model = reference_alexnet().eval()
    x = images(1, scale=100.0)
    with torch.no_grad():
        before = model(x)
    keys = list(model.state_dict())
    conv1_weight = model.features[0].weight
    assert convert(model) is model
    f = model.features
    assert isinstance(f[0], fnn.Conv2dReLU) and f[0].weight is conv1_weight
    assert isinstance(f[1], fnn.ReLULRNMaxPool2d)
    assert isinstance(f[2], nn.Identity) and isinstance(f[3], nn.Identity)
    # every new module, the Identity placeholders included, keeps the eval mode
    assert not any(m.training for m in model.modules())
    assert isinstance(f[8], fnn.Conv2dReLU) and isinstance(f[9], nn.Identity)
    assert isinstance(f[14], fnn.MaxPool2d)
    assert isinstance(model.classifier[1], nn.Linear)
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert_close_rel(model(x), before, 1e-4)
    assert convert(model) is model  # converting twice changes nothing


def test_convert_torchvision_alexnet():
    torchvision = pytest.importorskip("torchvision")
    fnn = alexnet_cuda.nn
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    x = images(1, 224)
    with torch.no_grad():
        before = model(x)
    keys = list(model.state_dict())
    convert(model)
    assert isinstance(model.features[0], fnn.Conv2dReLU)
    assert isinstance(model.features[1], nn.Identity)
    assert isinstance(model.features[2], fnn.MaxPool2d)
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        assert_close_rel(model(x), before, 1e-4)


def test_convert_single_layers_and_non_matching_runs():
    fnn = alexnet_cuda.nn
    assert isinstance(convert(nn.MaxPool2d(3, 2)), fnn.MaxPool2d)
    assert isinstance(convert(nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)), fnn.LocalResponseNorm)
    seq = nn.Sequential(
        nn.ReLU(), nn.LocalResponseNorm(5), nn.MaxPool2d(3, 2, padding=1), nn.Conv2d(3, 4, 3), nn.Sigmoid()
    )
    convert(seq)
    assert type(seq[0]) is nn.ReLU  # padded pool: no fused stage
    assert isinstance(seq[1], fnn.LocalResponseNorm) and isinstance(seq[2], fnn.MaxPool2d)
    assert type(seq[3]) is nn.Conv2d  # not followed by a ReLU


# --- errors ------------------------------------------------------------------------------


def test_input_errors():
    model = small()
    with pytest.raises(ValueError, match="image_size=224"):
        model(images(1, 224))
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.randn(1, 1, 227, 227))
    with pytest.raises(ValueError, match=r"\(N, 3, 227, 227\)"):
        model(torch.randn(3, 227, 227))


@pytest.mark.parametrize(
    "devices, match",
    [
        ("cpu", "pair of devices"),
        (("cpu",), "pair of devices"),
        (("cpu", "cpu", "cpu"), "pair of devices"),
        (("cpu", "nonsense"), r"devices\[1\]"),
        (("meta", "cpu"), "cpu and cuda"),
        (("cuda:0", "cuda:99"), "cuda"),
    ],
)
def test_bad_devices(devices, match):
    with pytest.raises(ValueError, match=match):
        small(devices=devices)


def test_bad_options():
    with pytest.raises(ValueError, match="image_size"):
        small(image_size=256)
    with pytest.raises(ValueError, match="lrn"):
        small(lrn={"size": 5})


# --- CUDA ----------------------------------------------------------------------------------


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def check_towers_on_cuda(devices, fused):
    torch.manual_seed(0)
    single = AlexNet(fused=fused).cuda().eval()
    towers = AlexNet(fused=fused, devices=devices).eval()
    towers.load_state_dict(single.state_dict())
    assert towers.features.conv2.towers[1].weight.device == torch.device(devices[1])
    x = images(8, scale=50.0).cuda()
    ys, yt = single(x), towers(x)
    assert yt.device == torch.device("cuda:0")
    assert_close_rel(yt, ys, 1e-4)
    ys.square().sum().backward()
    yt.square().sum().backward()
    gs, gt = canonical_grads(single), canonical_grads(towers)
    for key in gs:
        assert_close_rel(gt[key], gs[key], 1e-3)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("fused", [False, True])
def test_cuda_towers_on_one_gpu_two_streams(fused, no_tf32):
    check_towers_on_cuda(("cuda:0", "cuda:0"), fused)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_towers_on_two_gpus(no_tf32):
    check_towers_on_cuda(("cuda:0", "cuda:1"), False)


@needs_cuda
@pytest.mark.cuda
def test_cuda_fused_matches_unfused_bf16_channels_last():
    torch.manual_seed(0)
    stock = AlexNet(fused=False).cuda().to(memory_format=torch.channels_last)
    fused = AlexNet().cuda().to(memory_format=torch.channels_last)
    fused.load_state_dict(stock.state_dict())
    x = images(8, scale=50.0).cuda().to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert_close_rel(fused.eval()(x).float(), stock.eval()(x).float(), 0.05)
