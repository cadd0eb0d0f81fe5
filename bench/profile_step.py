"""Where an AlexNet training step spends its time: a per-kernel profile (torch.profiler).

    python bench/profile_step.py                          # ours, bf16 autocast, channels_last
    python bench/profile_step.py --model stock            # the seed-style stock model, eager
    python bench/profile_step.py --model stock --compile  # ... under torch.compile
    python bench/profile_step.py --dtype fp32 --layout nchw --batch 64 --steps 5

Runs a few warm-up training steps (forward, cross-entropy, backward, SGD with momentum and
weight decay, as bench/run.py's model rows), then profiles --steps more and writes
OUT/profile_<model>_<dtype>_<layout>.md: device time per kernel (self time, summed over
the profiled steps, divided by the step count) sorted by cost, and the same time grouped
into categories (convolution, matmul, LRN/pool stage, max-pool, elementwise, optimizer,
copies, other) by kernel name. On a CPU-only machine it profiles CPU ops instead, at a
small batch, and says so; the numbers that matter come from a GPU.

This is the "where the time goes" table for the whole-model targets; bench/run.py
gives the end-to-end step time it should add up to.
"""

import argparse
import os
import re
import sys
from collections import defaultdict

import torch
import torch.nn.functional as F

from alexnet_cuda.models import AlexNet, reference_alexnet

# Category by kernel/op name, first match wins (lower case). Triton kernels carry their
# Python function's name (_conv2d_relu_kernel); cuDNN/cuBLAS kernels carry library names.
CATEGORIES = [
    ("conv (ours, Triton)", r"conv2d_relu"),
    ("fused ReLU->LRN->pool (ours)", r"relu_lrn_max_pool2d"),
    ("LRN (ours)", r"alexnet_cuda(::|_)lrn"),
    ("max-pool (ours)", r"alexnet_cuda(::|_)max_pool2d"),
    ("convolution (cuDNN/ATen)", r"conv|cudnn|implicit_gemm|xmma_fprop|dgrad|wgrad|fprop|sm\d+_xmma"),
    ("matmul (cuBLAS)", r"gemm|cublas|cutlass|matmul|addmm|\bmm\b|linear"),
    ("max-pool (stock)", r"max_pool|maxpool"),
    ("LRN (stock)", r"avg_pool|local_response|pow|div"),
    ("optimizer", r"foreach|multi_tensor|sgd|_fused|optimizer"),
    ("dropout / softmax / loss", r"dropout|bernoulli|softmax|nll|cross_entropy"),
    ("copies / casts", r"copy|cast|to_copy|memcpy|memset|fill"),
    ("elementwise (Triton/Inductor, ATen)", r"triton_|elementwise|vectorized|relu|threshold|add|mul"),
]


def category(name: str) -> str:
    low = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, low):
            return label
    return "other"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        choices=["ours", "stock"],
        default="ours",
        help="ours: alexnet_cuda.models.AlexNet (fused kernels); stock: the seed-style model",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16", help="bf16 = bf16 autocast")
    p.add_argument("--layout", choices=["nchw", "nhwc"], default="nhwc")
    p.add_argument("--batch", type=int, default=None, help="default 128 on CUDA, 4 on CPU")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    p.add_argument("--top", type=int, default=25, help="kernels listed individually")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--out", default=None, help="output folder (default bench/results/<device>)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (128 if device == "cuda" else 4)
    if device == "cpu":
        # The paper init's gradients turn denormal within a few steps: many times slower on
        # x86 (convolution backward dominated the CPU profile). Not a GPU effect.
        torch.set_flush_denormal(True)
    fmt = torch.channels_last if args.layout == "nhwc" else torch.contiguous_format
    torch.manual_seed(0)
    model = AlexNet() if args.model == "ours" else reference_alexnet()
    model = model.to(device=device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    run = torch.compile(model) if args.compile else model
    x = torch.randn(batch, 3, 227, 227, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss = F.cross_entropy(run(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()

    # Self device time per kernel (CUDA) or self CPU time per op (CPU), per step.
    per_kernel = defaultdict(float)
    counts = defaultdict(int)
    for evt in prof.key_averages():
        us = evt.self_device_time_total if device == "cuda" else evt.self_cpu_time_total
        if device == "cuda" and evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if us <= 0:
            continue
        per_kernel[evt.key] += us / args.steps
        counts[evt.key] += evt.count // max(args.steps, 1)
    total = sum(per_kernel.values())
    by_cat = defaultdict(float)
    for name, us in per_kernel.items():
        by_cat[category(name)] += us

    label = f"{args.model}{' (torch.compile)' if args.compile else ''}, {args.dtype}, {args.layout}, batch {batch}"
    what = (
        "device time (CUDA kernels)" if device == "cuda" else "CPU self time per op (CPU-only machine: not GPU numbers)"
    )
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none"
    lines = [
        f"# AlexNet training step profile: {label}",
        "",
        f"GPU: {gpu}; torch {torch.__version__}; {what}; per step, averaged over {args.steps} steps.",
        f"Total: {total / 1e3:.3f} ms per step (kernels only: launch gaps and host time excluded).",
        "",
        "| category | ms/step | share |",
        "|---|---|---|",
    ]
    for cat, us in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {cat} | {us / 1e3:.3f} | {100 * us / max(total, 1e-9):.1f}% |")
    lines += [
        "",
        f"Top {args.top} kernels:",
        "",
        "| kernel | category | calls/step | ms/step | share |",
        "|---|---|---|---|---|",
    ]
    for name, us in sorted(per_kernel.items(), key=lambda kv: -kv[1])[: args.top]:
        short = name if len(name) <= 90 else name[:87] + "..."
        short = short.replace("|", "\\|")
        lines.append(
            f"| `{short}` | {category(name)} | {counts[name]} | {us / 1e3:.3f} | {100 * us / max(total, 1e-9):.1f}% |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out_dir = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", device)
    os.makedirs(out_dir, exist_ok=True)
    suffix = f"{args.model}{'_compile' if args.compile else ''}_{args.dtype}_{args.layout}"
    path = os.path.join(out_dir, f"profile_{suffix}.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
