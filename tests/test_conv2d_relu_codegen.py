"""The Triton conv kernel compiled for real GPU architectures, on any machine (no GPU).

The interpreter tests run the kernel's Python semantics; they never compile it. These
tests compile the launches the op makes for AlexNet's five layers (batch 128) for sm_90
and sm_80 with Triton's own ptxas (bench/codegen.py), so that a kernel that does not
compile for a GPU, overflows shared memory, spills where it did not, or loses the
tensor-core / async-copy path fails in CPU-only CI instead of on a rented GPU.
"""

import os

import pytest
import torch

from conftest import load_bench_module


def _load_codegen():
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource, make_backend  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"this Triton has no ahead-of-time compile API: {exc}")
    module = load_bench_module("codegen")
    if not os.path.exists(module._cuobjdump()):
        pytest.skip("Triton's NVIDIA backend tools (cuobjdump) are not installed")
    return module


@pytest.fixture(scope="module")
def codegen():
    return _load_codegen()


LAYER_NAMES = ["conv1", "conv2", "conv3", "conv4", "conv5"]


def _layer(codegen, name):
    return next(layer for layer in codegen.LAYERS if layer[0] == name)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_tuning_configs_on_hopper(codegen, name):
    """Every autotune config of the H100 run, bf16 channels_last (the targets' case)."""
    rows = codegen.compile_layer(
        _layer(codegen, name), torch.bfloat16, torch.channels_last, codegen.kmod.gpu_tuning_configs(), arch=90
    )
    for r in rows:
        assert r.smem <= codegen.SMEM_LIMIT[90], f"{name} {r.config}: {r.smem} B of shared memory"
        if int(r.config.split("x")[0]) >= 64:  # a warpgroup's M tile: Hopper's wgmma
            assert r.wgmma > 0, f"{name} {r.config}: no wgmma"
        if r.path == "tap":  # contiguous K blocks: pipelined async copies, no spills
            assert r.cp_async > 0 and r.spill == 0, r
    # The autotuner needs good candidates, not only working ones.
    spill_free = [r.config for r in rows if r.spill == 0]
    assert len(spill_free) >= 7, f"{name}: only {spill_free} compile without spills"
    # Cin/groups of 48 (conv2; conv1 after space-to-depth) to 384: a config takes the tap path
    assert any(r.path == "tap" for r in rows)


@pytest.mark.parametrize(
    "arch,dtype",
    [(90, torch.float32), (90, torch.float16), (80, torch.bfloat16), (80, torch.float32)],
    ids=["sm90-fp32", "sm90-fp16", "sm80-bf16", "sm80-fp32"],
)
def test_test_config_compiles(codegen, arch, dtype):
    """The one config of test runs, every layer, other dtypes and Ampere (mma.sync)."""
    for name in LAYER_NAMES:
        (r,) = codegen.compile_layer(
            _layer(codegen, name), dtype, torch.channels_last, [codegen.kmod.TEST_CONFIG], arch=arch
        )
        assert r.smem <= codegen.SMEM_LIMIT[arch], r
        assert r.spill == 0, r
        assert (r.wgmma if arch == 90 else r.mma_sync) > 0, r


def test_ieee_fp32_and_nchw_direct_compile(codegen):
    """The paths no default run takes: fp32 without TF32 (FMA, no tensor cores: close to
    the register cap), NCHW read in place."""
    for name in ("conv1", "conv2", "conv3"):
        (ieee,) = codegen.compile_layer(
            _layer(codegen, name), torch.float32, torch.channels_last, [codegen.kmod.TEST_CONFIG], allow_tf32=False
        )
        assert ieee.spill == 0 and ieee.wgmma == 0, ieee
    (direct,) = codegen.compile_layer(
        _layer(codegen, "conv2"),
        torch.bfloat16,
        torch.contiguous_format,
        [codegen.kmod.TEST_CONFIG],
        nchw_policy="direct",
    )
    assert direct.path == "general" and direct.wgmma > 0


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_space_to_depth_pass_compiles(codegen, dtype, layout):
    """conv1's space-to-depth pass (a plain copy kernel: no shared memory, no spills)."""
    r = codegen.compile_space_to_depth(_layer(codegen, "conv1"), dtype, layout, arch=90)
    assert r.spill == 0 and r.smem == 0 and r.ld_global > 0, r


def test_nchw_input_is_copied_to_the_tap_path_by_default(codegen):
    """NCHW input (copied to NHWC by default): conv3 takes the tap path in every config;
    NCHW output costs registers in the epilogue, but most configs stay spill-free."""
    rows = codegen.compile_layer(
        _layer(codegen, "conv3"), torch.bfloat16, torch.contiguous_format, codegen.kmod.gpu_tuning_configs()
    )
    assert all(r.path == "tap" and r.cp_async > 0 for r in rows)
    assert sum(r.spill == 0 for r in rows) >= 6, rows


# conv4/5's backward launches differ from conv3's only in channel counts: two layers
# cover the kernels' code paths at a fraction of the compile time.
@pytest.mark.parametrize(
    "name,layout",
    [("conv2", torch.channels_last), ("conv3", torch.channels_last), ("conv3", torch.contiguous_format)],
    ids=["conv2-nhwc", "conv3-nhwc", "conv3-nchw"],
)
def test_dgrad_on_hopper(codegen, name, layout):
    """The backward's Triton input gradient (the forward kernel with the ReLU mask fused
    into its A loads), every tuning config, bf16: shared memory within the limit, wgmma,
    the tap path (Cout/groups of 128-384 is a multiple of every BLOCK_K) and enough
    spill-free configs."""
    rows = codegen.compile_dgrad(
        _layer(codegen, name), torch.bfloat16, layout, codegen.kmod.gpu_tuning_configs(), arch=90
    )
    for r in rows:
        assert r.smem <= codegen.SMEM_LIMIT[90], r
        assert r.path == "tap" and r.cp_async > 0, r
        if int(r.config.split("x")[0]) >= 64:
            assert r.wgmma > 0, r
    spill_free = [r.config for r in rows if r.spill == 0]
    assert len(spill_free) >= 7, rows


def test_conv1_has_no_triton_dgrad(codegen):
    """conv1 is strided: its input gradient (rarely needed: the input is the image) is cuDNN's."""
    assert (
        codegen.compile_dgrad(_layer(codegen, "conv1"), torch.bfloat16, torch.channels_last, [codegen.kmod.TEST_CONFIG])
        == []
    )


@pytest.mark.parametrize(
    "name,layout",
    [("conv1", torch.channels_last), ("conv3", torch.channels_last), ("conv2", torch.contiguous_format)],
    ids=["conv1-nhwc", "conv3-nhwc", "conv2-nchw"],
)
def test_wgrad_on_hopper(codegen, name, layout):
    """The Triton weight gradient (mask and bias gradient fused, split-K; conv1 on its
    space-to-depth form), every tuning config, bf16: wgmma, shared memory within the
    limit; in NHWC pipelined async loads and no spills."""
    from alexnet_cuda.ops.conv2d_relu import wgrad as wg

    rows = codegen.compile_wgrad(_layer(codegen, name), torch.bfloat16, layout, wg.gpu_tuning_configs())
    assert len(rows) == len(wg.gpu_tuning_configs())
    for r in rows:
        assert r.smem <= codegen.SMEM_LIMIT[90], r
        assert r.wgmma > 0, r
        if layout == torch.channels_last:
            assert r.cp_async > 0 and r.spill == 0, r
    # NCHW: per-element gathers; the 128x128 tile runs out of registers (the rest fit)
    assert sum(r.spill == 0 for r in rows) >= len(rows) - 1, rows
