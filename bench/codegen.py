"""What the Triton compiler makes of the conv2d_relu kernel for a GPU, without a GPU.

For each AlexNet conv layer (batch 128) and each tuning config, this compiles the very
launch the op would make (same arguments, same specialization: ints equal to 1 become
constants, 16-divisible ints and tensor pointers get divisibility hints) for a chosen
architecture, ahead of time, and reports per config:

  regs      registers per thread (255 is the cap: more would spill)
  spill     bytes of local-memory stack per thread (0 is what we want)
  smem      dynamic shared memory per program (the pipeline's stages)
  mma       tensor-core instructions in the PTX: wgmma (Hopper) or mma.sync
  cp.async  asynchronous global->shared copies (pipelined loads)
  ld        plain global loads (gathers, bias, ...)
  path      the kernel's K loop: "tap" (NHWC, BLOCK_K divides Cin/groups: contiguous
            vector loads) or "general" (k decoded per element)

It needs no GPU and no CUDA driver: Triton's own ptxas and cuobjdump do the work. A GPU
run still has the last word on speed; this shows register pressure, spills and whether
the pipelined tensor-core path was taken, in seconds, on any machine.

    python bench/codegen.py                          # sm_90, bf16, NHWC, all configs
    python bench/codegen.py --layout nchw --nchw-policy direct --dtype fp32
    python bench/codegen.py --arch 80 --layers conv1,conv2 --out codegen.md
    python bench/codegen.py --dgrad --wgrad          # also the backward's Triton kernels
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # its siblings (cases/, common); alexnet_cuda is the installed one, as for run.py

import torch  # noqa: E402
import triton  # noqa: E402

from alexnet_cuda import config  # noqa: E402
from alexnet_cuda.ops.conv2d_relu import kernel as kmod  # noqa: E402

from cases.conv2d_relu import LAYERS  # noqa: E402
from common import DTYPES, LAYOUTS  # noqa: E402

# Largest dynamic shared memory per block (bytes) by compute capability.
SMEM_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass
class Codegen:
    layer: str
    config: str
    path: str
    regs: int
    spill: int
    smem: int
    wgmma: int
    mma_sync: int
    cp_async: int
    ld_global: int

    @property
    def mma(self) -> str:
        return f"wgmma {self.wgmma}" if self.wgmma else (f"mma.sync {self.mma_sync}" if self.mma_sync else "none")


def config_label(cfg) -> str:
    k = cfg.kwargs
    return f"{k['BLOCK_M']}x{k['BLOCK_N']}x{k['BLOCK_K']} w{cfg.num_warps} s{cfg.num_stages}"


def layer_tensors(layer, dtype: torch.dtype, layout: torch.memory_format, batch: int = 128):
    """Meta tensors shaped like bench/cases/conv2d_relu.py's inputs (weight in the input's layout)."""
    _, cin, h, cout, k, stride, padding, groups = layer
    x = torch.empty(batch, cin, h, h, device="meta", dtype=dtype).contiguous(memory_format=layout)
    w = torch.empty(cout, cin // groups, k, k, device="meta", dtype=dtype).contiguous(memory_format=layout)
    b = torch.empty(cout, device="meta", dtype=dtype)
    return x, w, b, [stride] * 2, [padding] * 2, [1, 1], groups


def _signature(jit, args, constexprs, backend):
    """Triton's JIT specialization of `args` (positional, then `constexprs` by name) for
    the kernel `jit`, spelled out for triton.compile."""
    names = jit.arg_names
    signature: Dict[str, str] = {}
    constants: Dict[str, object] = {}
    attrs = {}
    divisible = backend.parse_attr("D") if hasattr(backend, "parse_attr") else [["tt.divisibility", 16]]
    for i, (name, value) in enumerate(zip(names, args)):
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + _TRITON_TYPES[value.dtype]
            if value.data_ptr() % 16 == 0:  # meta tensors: 0; CUDA allocations are 512-aligned
                attrs[(i,)] = divisible
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif value == 1:  # the JIT makes an int equal to 1 a constant
            signature[name] = "constexpr"
            constants[name] = 1
        else:
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = divisible
    for name in names[len(args) :]:
        signature[name] = "constexpr"
    constants.update(constexprs)
    return signature, constants, attrs


def _resource_usage(cubin: bytes):
    """(registers, spill stack bytes) of the kernel, from cuobjdump --dump-resource-usage."""
    tool = _cuobjdump()
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if not m:
        raise RuntimeError(f"cannot parse cuobjdump's resource usage:\n{out}")
    return int(m.group(1)), int(m.group(2))


def _cuobjdump() -> str:
    try:
        from triton import knobs

        return knobs.nvidia.cuobjdump.path
    except (ImportError, AttributeError):
        return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_kernel(jit, args, constexprs, num_warps: int, num_stages: int, arch: int):
    """triton.compile of `jit` for sm_<arch>, specialized on `args` as the JIT would."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    signature, constants, attrs = _signature(jit, args, constexprs, backend)
    options = backend.parse_options({"num_warps": num_warps, "num_stages": num_stages})
    return triton.compile(ASTSource(jit, signature, constants, attrs), target=target, options=options.__dict__)


def _codegen(kernel, layer: str, config: str, path: str) -> Codegen:
    ptx = kernel.asm["ptx"]
    regs, spill = _resource_usage(kernel.asm["cubin"])
    return Codegen(
        layer=layer,
        config=config,
        path=path,
        regs=regs,
        spill=spill,
        smem=kernel.metadata.shared,
        wgmma=ptx.count("wgmma.mma_async"),
        mma_sync=ptx.count("mma.sync"),
        cp_async=len(re.findall(r"cp\.async\.c[ag]\.shared", ptx)),
        ld_global=len(re.findall(r"\bld\.global", ptx)),
    )


def compile_layer(
    layer,
    dtype: torch.dtype,
    layout: torch.memory_format,
    configs,
    arch: int = 90,
    nchw_policy: Optional[str] = None,
    allow_tf32: bool = True,
) -> List[Codegen]:
    """Compile the op's conv launch for `layer` once per config for sm_<arch>; one Codegen each."""
    x, w, b, stride, padding, dilation, groups = layer_tensors(layer, dtype, layout)
    policy = config.conv_nchw_input
    if nchw_policy is not None:
        config.conv_nchw_input = nchw_policy
    try:
        _, args, constexprs, _ = kmod._kernel_arguments(
            x, w, b, stride, padding, dilation, groups, allow_tf32=allow_tf32
        )
    finally:
        config.conv_nchw_input = policy
    rows = []
    for cfg in configs:
        kernel = compile_kernel(
            kmod._conv2d_relu_kernel.fn, args, {**constexprs, **cfg.kwargs}, cfg.num_warps, cfg.num_stages, arch
        )
        tap = constexprs["C_INNER"] and constexprs["CG_POW2"] % cfg.kwargs["BLOCK_K"] == 0
        rows.append(_codegen(kernel, layer[0], config_label(cfg), "tap" if tap else "general"))
    return rows


def dgrad_tensors(layer, dtype: torch.dtype, layout: torch.memory_format, batch: int = 128):
    """Meta tensors of `layer`'s dgrad launch, as backward.dgrad_triton makes
    it: dy and the mask y (the layer's output, same strides), the flipped weight, the
    dgrad padding; or None when the layer's input gradient is not the Triton dgrad's."""
    from alexnet_cuda.ops.conv2d_relu import backward as bwd

    x, w, _, stride, padding, dilation, groups = layer_tensors(layer, dtype, layout, batch)
    ho, wo = kmod.conv_output_size(x.shape[2], x.shape[3], w.shape[2], w.shape[3], stride, padding, dilation)
    y = torch.empty(
        (batch, w.shape[0], ho, wo), device="meta", dtype=dtype, memory_format=kmod.output_memory_format(x, w)
    )
    if not bwd.dgrad_takes(y, w, stride, padding, dilation, groups):
        return None
    w_t = bwd.flipped_weight(w, groups, kmod.output_memory_format(y, w))
    return y, w_t, bwd.dgrad_padding(w.shape, padding, dilation), dilation, groups, kmod.output_memory_format(x, w)


def compile_dgrad(
    layer, dtype: torch.dtype, layout: torch.memory_format, configs, arch: int = 90, allow_tf32: bool = True
) -> List[Codegen]:
    """Compile `layer`'s dgrad launch (the forward kernel with MASK_A, no ReLU, no bias)
    once per config; [] for layers whose input gradient stays cuDNN's (conv1)."""
    tensors = dgrad_tensors(layer, dtype, layout)
    if tensors is None:
        return []
    y, w_t, pad, dilation, groups, out_format = tensors
    plan = kmod._plan(
        y, w_t, None, [1, 1], pad, dilation, groups, allow_tf32, relu=False, masked=True, out_format=out_format
    )
    _, pointers = kmod._bind(plan, y, w_t, None, mask=y)
    rows = []
    for cfg in configs:
        kernel = compile_kernel(
            kmod._conv2d_relu_kernel.fn,
            pointers + plan.scalars,
            {**plan.constexprs, **cfg.kwargs},
            cfg.num_warps,
            cfg.num_stages,
            arch,
        )
        tap = plan.constexprs["C_INNER"] and plan.constexprs["CG_POW2"] % cfg.kwargs["BLOCK_K"] == 0
        rows.append(_codegen(kernel, layer[0] + " dgrad", config_label(cfg), "tap" if tap else "general"))
    return rows


def compile_wgrad(
    layer, dtype: torch.dtype, layout: torch.memory_format, configs, arch: int = 90, allow_tf32: bool = True
) -> List[Codegen]:
    """Compile `layer`'s Triton weight-gradient launch (bias gradient fused) once per config,
    as backward.wgrad_triton_layer makes it: conv1 on its space-to-depth form."""
    from alexnet_cuda.ops.conv2d_relu import wgrad as wg
    from alexnet_cuda.ops.conv2d_relu import space_to_depth as s2d

    x, w, _, stride, padding, dilation, groups = layer_tensors(layer, dtype, layout)
    n, _, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    ho, wo = kmod.conv_output_size(h, wd, kh, kw, stride, padding, dilation)
    s = s2d.factor(cg, kh, kw, stride, dilation, groups, wo)
    if s:
        kh, kw, hs, ws_ = s2d.rewritten_sizes(kh, kw, ho, wo, s)
        x = s2d.input_to_depth(x, s, padding, hs, ws_)
        cg, h, wd = s * s * cg, hs, ws_
        stride, padding = [1, 1], [0, 0]
    y = torch.empty((n, cout, ho, wo), device="meta", dtype=dtype, memory_format=kmod.output_memory_format(x, w))
    k_total, m_total = cg * kh * kw, n * ho * wo
    m_split, splits = wg.split_sizes(m_total, wg.default_splits(m_total, cout // groups, k_total, groups))
    ws = torch.empty((splits, cout, k_total), device="meta")
    dbws = torch.empty((splits, cout), device="meta")
    args, constexprs, _ = wg.wgrad_arguments(
        x,
        y,
        y,
        ws,
        dbws,
        (n, h, wd, cout, ho, wo, kh, kw, cg, cout // groups),
        m_total,
        k_total,
        m_split,
        splits,
        stride,
        padding,
        dilation,
        groups,
        True,
        x.stride(1) <= x.stride(3),
        allow_tf32,
    )
    rows = []
    for cfg in configs:
        kernel = compile_kernel(
            wg._conv2d_relu_wgrad_kernel.fn, args, {**constexprs, **cfg.kwargs}, cfg.num_warps, cfg.num_stages, arch
        )
        k = cfg.kwargs
        label = f"{k['BLOCK_CO']}x{k['BLOCK_K']}x{k['BLOCK_M']} w{cfg.num_warps} s{cfg.num_stages}"
        rows.append(_codegen(kernel, f"{layer[0]} wgrad ({splits} splits)", label, "general"))
    return rows


def compile_space_to_depth(layer, dtype: torch.dtype, layout: torch.memory_format, arch: int = 90) -> Codegen:
    """Compile the space-to-depth pass that `layer` runs first (conv1), as its launcher
    would call it (Triton's default 4 warps, 3 stages)."""
    from alexnet_cuda.ops.conv2d_relu import space_to_depth as s2d

    x, w, _, stride, padding, dilation, groups = layer_tensors(layer, dtype, layout)
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    ho, wo = kmod.conv_output_size(h, wd, kh, kw, stride, padding, dilation)
    s = s2d.factor(c, kh, kw, stride, dilation, groups, wo)
    if not s:
        raise ValueError(f"{layer[0]} does not use space-to-depth")
    _, _, hs, ws = s2d.rewritten_sizes(kh, kw, ho, wo, s)
    y = torch.empty((n, hs, ws, s * s * c), device="meta", dtype=dtype)
    args = (x, y, hs, ws, h, wd, padding[0], padding[1], *x.stride())
    kernel = compile_kernel(s2d._space_to_depth_kernel, args, {"S": s, "C": c, "BLOCK": s2d._BLOCK}, 4, 3, arch)
    return _codegen(kernel, layer[0] + " space-to-depth", f"BLOCK {s2d._BLOCK} w4", "-")


def report(rows: List[Codegen], arch: int) -> str:
    limit = SMEM_LIMIT.get(arch)
    lines = [
        "| layer | config | path | regs | spill B | smem KiB | MMA | cp.async | ld.global |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        smem = f"{r.smem / 1024:.0f}" + (" (over the limit)" if limit and r.smem > limit else "")
        lines.append(
            f"| {r.layer} | {r.config} | {r.path} | {r.regs} | {r.spill} | {smem} | {r.mma} | "
            f"{r.cp_async} | {r.ld_global} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Counts are static instruction counts in the PTX (per kernel, not per iteration).",
    )
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = H100, 80 = A100)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="nhwc")
    p.add_argument(
        "--nchw-policy",
        choices=["channels_last", "direct"],
        default=None,
        help="NCHW input handling (default: alexnet_cuda.config.conv_nchw_input)",
    )
    p.add_argument(
        "--layers",
        default=",".join(layer[0] for layer in LAYERS),
        help="comma-separated, from: " + ", ".join(layer[0] for layer in LAYERS),
    )
    p.add_argument(
        "--configs",
        choices=["tuning", "test"],
        default="tuning",
        help="the autotuner's configs, or the single one of test runs",
    )
    p.add_argument(
        "--dgrad", action="store_true", help="also the input-gradient (dgrad) launches of the stride-1 layers"
    )
    p.add_argument(
        "--wgrad", action="store_true", help="also the weight-gradient (wgrad) launches (their own tuning configs)"
    )
    p.add_argument("--out", help="also write the table to this Markdown file")
    a = p.parse_args(argv)
    by_name = {layer[0]: layer for layer in LAYERS}
    names = [n for n in a.layers.split(",") if n]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        p.error(f"--layers: unknown {unknown}; choose from {sorted(by_name)}")
    configs = kmod.gpu_tuning_configs() if a.configs == "tuning" else [kmod.TEST_CONFIG]
    rows = []
    for name in names:
        rows += compile_layer(by_name[name], DTYPES[a.dtype], LAYOUTS[a.layout], configs, a.arch, a.nchw_policy)
        if a.dgrad:
            rows += compile_dgrad(by_name[name], DTYPES[a.dtype], LAYOUTS[a.layout], configs, a.arch)
        if a.wgrad:
            from alexnet_cuda.ops.conv2d_relu import wgrad as wg

            rows += compile_wgrad(
                by_name[name],
                DTYPES[a.dtype],
                LAYOUTS[a.layout],
                wg.gpu_tuning_configs() if a.configs == "tuning" else [wg.TEST_CONFIG],
                a.arch,
            )
        try:  # conv1's space-to-depth pass, when the layer has one
            rows.append(compile_space_to_depth(by_name[name], DTYPES[a.dtype], LAYOUTS[a.layout], a.arch))
        except ValueError:
            pass
        print(f"compiled {name}", file=sys.stderr, flush=True)
    policy = a.nchw_policy or config.conv_nchw_input
    title = (
        f"conv2d_relu codegen: sm_{a.arch}, {a.dtype}, {a.layout}"
        + (f" (NCHW input policy: {policy})" if a.layout == "nchw" else "")
        + f", batch 128, triton {triton.__version__}"
    )
    text = f"{title}\n\n{report(rows, a.arch)}\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(f"# {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
