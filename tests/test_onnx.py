"""alexnet_cuda.onnx: models with our layers export to standard ONNX operators, and
onnxruntime computes what PyTorch computes (CPU, fp32)."""

import pytest
import torch
from torch import nn

import alexnet_cuda
from alexnet_cuda import ops

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install '.[onnx]'")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed: pip install '.[onnx]'")
alexnet_onnx = pytest.importorskip("alexnet_cuda.onnx")

ATOL = 1e-5


class Call(nn.Module):
    """One op call as a module (torch.onnx.export takes modules)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def export_and_run(model, x, tmp_path, batch=None):
    """Export ``model`` for example ``x``; check the file; return onnxruntime's outputs
    on ``x`` (or on a fresh input of batch size ``batch``) and that input."""
    path = str(tmp_path / "model.onnx")
    alexnet_onnx.export(model, (x,), path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    domains = {node.domain for node in proto.graph.node}
    assert domains <= {"", "ai.onnx"}, f"non-standard ops left: {domains}"
    assert not proto.functions, [f.name for f in proto.functions]
    if batch is not None:
        x = torch.randn(batch, *x.shape[1:])
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.contiguous().numpy()}
    return [torch.from_numpy(out) for out in session.run(None, feed)], x, proto


def assert_exports_exactly(fn, x, tmp_path):
    (got, *rest), x, _ = export_and_run(Call(fn).eval(), x, tmp_path)
    expected = fn(x)
    expected = expected if isinstance(expected, torch.Tensor) else expected[0]
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)
    return rest


@pytest.mark.parametrize("size, paper_alpha", [(1, False), (2, True), (3, True), (4, False), (5, False), (6, True)])
def test_local_response_norm_odd_and_even_sizes(size, paper_alpha, tmp_path):
    fn = lambda x: ops.local_response_norm(
        x,
        size,
        alpha=0.5,
        beta=0.75,
        k=1.5,  # noqa: E731
        paper_alpha=paper_alpha,
    )
    assert_exports_exactly(fn, torch.randn(2, 9, 5, 4), tmp_path)


@pytest.mark.parametrize("shape", [(2, 7, 6), (2, 7, 3, 4, 5)])
def test_local_response_norm_other_ranks(shape, tmp_path):
    fn = lambda x: ops.local_response_norm(x, 4, alpha=0.3, beta=0.75, k=2.0)  # noqa: E731
    assert_exports_exactly(fn, torch.randn(shape), tmp_path)


@pytest.mark.parametrize(
    "kwargs, hw",
    [
        (dict(kernel_size=3, stride=2), (13, 13)),
        (dict(kernel_size=2, stride=2, padding=1, ceil_mode=True), (5, 5)),  # last window dropped
        (dict(kernel_size=3, stride=2, ceil_mode=True), (8, 9)),
        (dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), dilation=(2, 1)), (9, 8)),
    ],
)
def test_max_pool2d(kwargs, hw, tmp_path):
    fn = lambda x: ops.max_pool2d(x, **kwargs)  # noqa: E731
    assert_exports_exactly(fn, torch.randn(2, 3, *hw), tmp_path)


def test_max_pool2d_indices_are_pytorchs(tmp_path):
    fn = lambda x: ops.max_pool2d(x, 3, 2, padding=1, ceil_mode=True, return_indices=True)  # noqa: E731
    x = torch.randn(2, 4, 10, 11)
    (indices,) = assert_exports_exactly(fn, x, tmp_path)
    torch.testing.assert_close(indices, fn(x)[1], atol=0, rtol=0)


def test_max_pool2d_unbatched_input(tmp_path):
    fn = lambda x: ops.max_pool2d(x, 3, 2)  # noqa: E731
    assert_exports_exactly(fn, torch.randn(4, 9, 9), tmp_path)


def test_max_pool2d_compact_argmax_is_the_kernels():
    """The window-local argmax (what backward reads), checked on the kernel op."""
    x = torch.randn(2, 3, 9, 10)
    args = ([3, 2], [2, 1], [1, 1], [2, 1], True, False)
    fn = lambda t: torch.ops.alexnet_cuda.max_pool2d_forward(t, *args)  # noqa: E731
    program = torch.onnx.export(
        Call(fn).eval(), (x,), dynamo=True, custom_translation_table=alexnet_onnx.TRANSLATIONS, optimize=False
    )
    out, argmax = program(x)
    expected_out, expected_argmax = fn(x)
    torch.testing.assert_close(out, expected_out, atol=ATOL, rtol=1e-5)
    assert argmax.dtype == torch.uint8
    torch.testing.assert_close(argmax, expected_argmax, atol=0, rtol=0)


@pytest.mark.parametrize("lrn_groups, size, paper_alpha", [(1, 5, False), (2, 5, True), (1, 4, True), (2, 6, False)])
def test_relu_lrn_max_pool2d(lrn_groups, size, paper_alpha, tmp_path):
    fn = lambda x: ops.relu_lrn_max_pool2d(
        x,
        size,
        0.2,
        0.75,
        2.0,
        3,
        2,  # noqa: E731
        lrn_groups=lrn_groups,
        paper_alpha=paper_alpha,
    )
    (got,), x, proto = export_and_run(Call(fn).eval(), torch.randn(2, 8, 11, 11), tmp_path, batch=3)
    torch.testing.assert_close(got, fn(x), atol=ATOL, rtol=1e-5)
    used = [node.op_type for node in proto.graph.node]
    assert {"Relu", "MaxPool"} <= set(used)
    assert ("LRN" in used) == (size % 2 == 1)  # even sizes: the formula (onnx.py says why)
    assert used.count("Split") == (lrn_groups > 1) and used.count("Concat") >= (lrn_groups > 1)


def test_channels_last_input(tmp_path):
    fn = lambda x: ops.relu_lrn_max_pool2d(x, 5, 0.2, 0.75, 2.0, 3, 2, lrn_groups=2)  # noqa: E731
    x = torch.randn(2, 8, 11, 11).to(memory_format=torch.channels_last)
    assert_exports_exactly(fn, x, tmp_path)


@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_relu(bias, tmp_path):
    weight = torch.randn(6, 2, 3, 3)
    b = torch.randn(6) if bias else None
    fn = lambda x: ops.conv2d_relu(x, weight, b, stride=2, padding=1, dilation=1, groups=2)  # noqa: E731
    assert_exports_exactly(fn, torch.randn(2, 4, 9, 9), tmp_path)


def test_fused_alexnet_with_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = alexnet_cuda.models.AlexNet(num_classes=10, width=0.125, dropout=0.0).eval()
    for p in model.parameters():  # N(0, 0.01) weights give near-constant logits: test real values
        nn.init.normal_(p, 0.0, 0.1)
    (got,), x, proto = export_and_run(model, torch.randn(2, 3, 227, 227), tmp_path, batch=3)
    used = {node.op_type for node in proto.graph.node}
    assert {"Conv", "Relu", "LRN", "MaxPool", "Split", "Concat"} <= used
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), atol=ATOL, rtol=1e-5)


def test_converted_torchvision_style_model(tmp_path):
    stock = nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2),
        nn.ReLU(),
        nn.LocalResponseNorm(4, alpha=0.1, k=2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.LocalResponseNorm(3),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    ).eval()
    model = alexnet_cuda.convert(stock)
    assert any(isinstance(m, alexnet_cuda.nn.ReLULRNMaxPool2d) for m in model.modules())
    x = torch.randn(2, 3, 39, 39)
    (got,), x, _ = export_and_run(model, x, tmp_path, batch=4)
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), atol=ATOL, rtol=1e-5)
