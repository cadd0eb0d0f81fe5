"""Whole-model cases: AlexNet training step and inference, ours vs the seed-style stock model.

* ours: ``alexnet_cuda.models.AlexNet()`` -- one device, fused layers (Conv2dReLU,
  ReLU->LRN->max-pool, max-pool), per-tower LRN as in the paper.
* eager / compile: ``reference_alexnet()`` -- the seed-style stock model (one LRN over all
  channels), eagerly and under ``torch.compile`` (when ``cfg.compile``).

Both start from the same weights (ours loads the stock model's state_dict). The LRN
windows differ only at the tower boundary (channel 47/48 and 127/128): the same work, but
not the same function, so the gates below compare ours with ``AlexNet(fused=False)``.

"fwd+bwd" here is one full training step: forward, cross-entropy, backward and an SGD step
(momentum 0.9, weight decay 5e-4, as in the paper), under bf16 autocast for "bf16". Its
timed function returns only the loss, which cannot show a wrong backward (and with the
paper's init every model's first loss is about ln(1000)), so its correctness gate is
``check_training_step``: ours against ``AlexNet(fused=False)`` -- the same class built from
stock torch.nn layers, the same function -- holding the same weights and optimizer state,
one step each with dropout off, comparing the logits, every gradient and every parameter's
update (tolerances and why: ``TRAIN_RTOL``; the row keeps the worst error). "fwd" is
inference (eval mode, no_grad); its gate, ``check_inference``, compares the features and
the logits with ``AlexNet(fused=False)`` holding ours' weights, biases zeroed in both (the
timed seed-style model differs at the tower boundary, and the paper's biases make an
untrained net's output nearly input-independent).
``extra["images"]`` is the batch, so img/s = images / (ms / 1000).

fp32 rows on CUDA run with TF32 on for convolutions and matmuls alike (``Case.tf32``:
bench/run.py sets both switches for the case, records them in the row and restores them
after), as stock PyTorch users and the published fp32 baselines run AlexNet; without it the
FC layers ran in IEEE fp32 while the row was rated against the TF32 matmul ceiling.

Rows of what a user can reach with ours: "ours + CUDA graph" (CUDA only) and "ours +
torch.compile" (when ``cfg.compile``; ``--max-autotune``: mode "max-autotune", for the stock
compile column too), each for the training step (``alexnet_cuda.train.step.make_step``, with
this group's SGD) and inference (``make_inference``), on their own models. They pass the
same gates, run through the variant (a graphed step is gated on a replay, after its warm-up
and capture); their stock columns are copied from the eager row (``annotate``).

Models are built on first use. On CUDA each training case has its own pair (ours, stock:
0.75 GB each with gradients and momentum; "compile" trains the stock one), so every case's
gate starts from fresh models; inference cases share one untrained pair per layout.
Reduced CPU runs share one pair between a layout's inference and training case (see cases).
Peak CUDA memory of a training step goes into the training rows (``annotate``).
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from alexnet_cuda.models import AlexNet, reference_alexnet
from alexnet_cuda.train.step import make_inference, make_step
from common import LAYOUTS, Case, tf32

_MODELS = {}  # (kind, layout, device, purpose) -> (model, optimizer)
_COMPILED = {}  # (layout, device, purpose) -> torch.compile(stock model)
_VARIANTS = {}  # (variant, direction, dtype, layout, device) -> (model, step or forward)
_PRIMED = set()  # ids of the _VARIANTS steps and forwards already primed (_primed)
PRIME_CALLS = 4  # make_step's / make_inference's 3 warm-up calls, then the capture
COMPILE_MODE = {False: None, True: "max-autotune"}  # by cfg.max_autotune


def _models(kind, layout, device, purpose):
    """Model and SGD optimizer; 'ours' starts from the 'stock' model's weights."""
    key = (kind, layout, device, purpose)
    if key not in _MODELS:
        fmt = LAYOUTS[layout]
        if kind == "stock":
            torch.manual_seed(0)
            model = reference_alexnet()
        else:
            model = AlexNet()
            stock = _models("stock", layout, device, purpose)[0]
            model.load_reference_state_dict(stock.state_dict())
        model = model.to(device=device, memory_format=fmt)
        _MODELS[key] = (model, _sgd(model))
    return _MODELS[key]


def _unfused_twin(layout, device):
    """An AlexNet(fused=False): the same function as ours from stock layers, which the
    inference gate loads with ours' weights (the timed seed-style model differs at the
    tower boundary, so it cannot be the reference)."""
    key = ("unfused", layout, device)
    if key not in _MODELS:
        _MODELS[key] = (AlexNet(fused=False).to(device=device, memory_format=LAYOUTS[layout]), None)
    return _MODELS[key][0]


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def _compiled(layout, device, purpose, mode=None):
    key = (layout, device, purpose)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(_models("stock", layout, device, purpose)[0], dynamic=False, mode=mode)
    return _COMPILED[key]


def _autocast(device, dt):
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dt == "bf16")


def _sgd_step(model, opt, x, y, device, dt):
    """One training step in the model's current mode; returns (logits, loss)."""
    opt.zero_grad(set_to_none=True)
    with _autocast(device, dt):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    return logits, loss


def _train_step(get_model, get_opt, device, dt):
    def step(x, y):
        model = get_model()
        model.train()
        return _sgd_step(model, get_opt(), x, y, device, dt)[1].detach()

    return step


def _inference(get_model, device, dt):
    def run(x, y):
        model = get_model()
        model.eval()
        with torch.no_grad(), _autocast(device, dt):
            return model(x)

    return run


# Relative L2 error allowed per tensor in the training gate. Ours and the stock layers round
# differently, and where a max-pool window's two largest values are within that rounding,
# the two models send the window's gradient to different (equally valid) positions, which
# moves every conv weight gradient before that pool. Measured on CPU (full width, batch 2):
# fp32 (the gate runs IEEE fp32, TF32 off) up to 6e-3 (the conv1 weight gradient, in 3 of 8
# input draws; 1e-5 or less without a flipped window); bf16, which rounds to 8 bits so that
# ties are common, 0.16 (conv1 weight gradient; 0.01 or less from conv5 on). A wrong kernel
# is off by about the tensor itself (relative error 1 or more).
TRAIN_RTOL = {"fp32": 0.02, "bf16": 0.5}
# The gate's inputs are the case's N(0, 1) images times this: with the paper's biases of 1
# and small activations, values before a pool differ mostly in bits that rounding loses, and
# many more windows flip (1.5% error in the conv1 weight gradient at scale 1 on CPU).
GATE_INPUT_SCALE = 10.0


def _rel_l2(ours, ref):
    """||ours - ref|| / ||ref|| in fp32; inf when ours has a NaN or inf."""
    ours, ref = ours.detach().float(), ref.detach().float()
    if not torch.isfinite(ours).all():
        return math.inf
    scale = ref.norm().item()
    if scale == 0:
        return 0.0 if ours.norm().item() == 0 else math.inf
    return (ours - ref).norm().item() / scale


def check_training_step(ours, opt, stock, x, y, device, dt, rtol=None, make_ours_step=None, warmup=0):
    """The training case's gate: one SGD step of ``ours`` (with its optimizer ``opt``; None:
    a fresh SGD) against ``stock``, an ``AlexNet(fused=False)`` of the same shape, which is
    given ours' weights and optimizer state; the inputs are ``x * GATE_INPUT_SCALE`` and ``y``.

    ``make_ours_step(ours, opt)``: the step to check for ours, an alexnet_cuda.train.step
    step (compiled, CUDA-graphed), instead of the eager ``_sgd_step``. It first runs
    ``warmup`` steps on the gate's input (a graphed step captures only after its warm-up),
    and the comparison starts from where they left ours.

    Dropout is off in both for these steps (their masks would differ), and fp32 runs in
    IEEE fp32 (TF32's rounding would flip pool windows, see TRAIN_RTOL; the TF32 conv
    kernels have their own tests). The step leaves ours one step further on. Compares the
    logits, every parameter's gradient and every parameter's update (the step itself) by
    relative L2 error; raises AssertionError naming the worst tensor when any is over
    ``rtol`` (default ``TRAIN_RTOL[dt]``), else returns the worst error for the row.
    """
    rtol = TRAIN_RTOL[dt] if rtol is None else rtol
    x = x * GATE_INPUT_SCALE
    opt = opt if opt is not None else _sgd(ours)
    ours_step = None
    if make_ours_step is not None:
        _dropout_off(ours)
        with tf32(False):
            ours_step = make_ours_step(ours, opt)
            for _ in range(warmup):
                ours_step(x, y)
    stock.load_state_dict(ours.state_dict())
    stock_opt = _sgd(stock)
    stock_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # the same momentum so far
    before = {name: p.detach().clone() for name, p in ours.named_parameters()}
    results = []
    for model, optimizer, step in ((ours, opt, ours_step), (stock, stock_opt, None)):
        _dropout_off(model)
        with tf32(False):
            logits = step(x, y)[1] if step else _sgd_step(model, optimizer, x, y, device, dt)[0]
        model.train()  # dropout back on for the timed steps
        tensors = {"logits": logits.detach()}
        for name, p in model.named_parameters():
            tensors[f"{name} gradient"] = p.grad
            tensors[f"{name} update"] = p.detach() - before[name]
        results.append(tensors)
    return _compare_step(*results, rtol)


def _dropout_off(model):
    """Train mode with every Dropout in eval mode (the gate's steps)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()


def _compare_step(ours_t, stock_t, rtol):
    if ours_t.keys() != stock_t.keys():
        raise AssertionError(f"ours and stock have different parameters: {sorted(ours_t.keys() ^ stock_t.keys())}")
    errors = {key: _rel_l2(ours_t[key], stock_t[key]) for key in stock_t}
    worst = max(errors, key=errors.get)
    over = [key for key, err in errors.items() if err > rtol]
    if over:
        raise AssertionError(
            f"{len(over)} of {len(errors)} tensors off by more than {rtol} (relative L2); "
            f"worst: {worst} {errors[worst]:.3g}"
        )
    return {
        "check": f"one SGD step vs AlexNet(fused=False), dropout off, relative L2 <= {rtol}",
        "check_max_rel_err": errors[worst],
        "check_worst": worst,
    }


# Relative L2 error allowed in the inference gate (features and logits, ours vs the unfused
# twin, both with zero biases). fp32 rows on CUDA run TF32 convolutions (ours Triton, the
# twin cuDNN); bf16 rounds to 8 bits; a wrong kernel is off by about the tensor itself.
INFER_RTOL = {"fp32": 0.02, "bf16": 0.1}


def check_inference(ours, twin, x, device, dt, rtol=None, run=None):
    """The inference case's gate: a copy of ``ours`` against ``twin`` (an
    ``AlexNet(fused=False)``) holding the same weights, every bias set to 0 in both, in
    eval mode: the features (pool5's output) and the logits by relative L2. Raises
    AssertionError when either is over ``rtol`` (default ``INFER_RTOL[dt]``), else returns
    the worst error for the row.

    Why zero biases: with the paper's (biases of 1 in conv2, conv4, conv5, fc6, fc7) the
    untrained network's outputs hardly depend on its input: a 5% error in conv1's weight
    moves pool5's output by 2e-6 relative and the logits by 5e-5, below bf16's rounding.
    Without biases it moves both by about 5%.

    ``run(x) -> logits``: the forward pass to check instead of ours' eager one (compiled, or
    replayed from a CUDA graph, over ``ours``' own parameters): ours' biases are zeroed in
    place for it and restored after, and only the logits are compared (the features are
    inside the compiled or captured pass)."""
    rtol = INFER_RTOL[dt] if rtol is None else rtol
    if run is not None:
        return _check_inference_run(ours, twin, x, device, dt, rtol, run)
    probe = copy.deepcopy(ours)
    with torch.no_grad():
        for name, p in probe.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    twin.load_state_dict(probe.state_dict())
    outs = []
    for model in (probe, twin):
        model.eval()
        with torch.no_grad(), _autocast(device, dt):
            outs.append({"features": model.features(x), "logits": model(x)})
    del probe
    errors = {key: _rel_l2(outs[0][key], outs[1][key]) for key in outs[1]}
    worst = max(errors, key=errors.get)
    if errors[worst] > rtol:
        raise AssertionError(f"{worst} off by {errors[worst]:.3g} > {rtol} (relative L2) vs AlexNet(fused=False)")
    return {
        "check": f"features and logits vs AlexNet(fused=False), biases 0, relative L2 <= {rtol}",
        "check_max_rel_err": errors[worst],
        "check_worst": worst,
    }


def _check_inference_run(ours, twin, x, device, dt, rtol, run):
    biases = {name: p for name, p in ours.named_parameters() if name.endswith("bias")}
    saved = {name: p.detach().clone() for name, p in biases.items()}
    try:
        with torch.no_grad():
            for p in biases.values():
                p.zero_()
        twin.load_state_dict(ours.state_dict())
        twin.eval()
        got = run(x)
        with torch.no_grad(), _autocast(device, dt):
            ref = twin(x)
    finally:
        with torch.no_grad():
            for name, p in biases.items():
                p.copy_(saved[name])
    err = _rel_l2(got, ref)
    if err > rtol:
        raise AssertionError(f"logits off by {err:.3g} > {rtol} (relative L2) vs AlexNet(fused=False)")
    return {
        "check": f"logits vs AlexNet(fused=False), biases 0, relative L2 <= {rtol}",
        "check_max_rel_err": err,
        "check_worst": "logits",
    }


def forward_flops_per_image(image_size=227):
    """Multiply-adds x 2 of one forward pass (conv and FC layers), 1.449 GFLOP at 227."""
    # (output maps, output size, MACs per output)
    layers = [
        (96, 55, 3 * 11 * 11),
        (256, 27, 48 * 5 * 5),
        (384, 13, 256 * 3 * 3),
        (384, 13, 192 * 3 * 3),
        (256, 13, 192 * 3 * 3),
    ]
    macs = sum(c * s * s * k for c, s, k in layers)
    macs += 9216 * 4096 + 4096 * 4096 + 4096 * 1000
    return 2 * macs


def cases(cfg):
    """Training-step and inference cases per dtype (fp32, bf16) and layout.

    CUDA: training first, each dtype's training cases on their own pair of models, inference on
    a shared untrained pair per layout. Reduced CPU runs: per dtype and layout one pair serves
    both cases, inference first (its gate needs the pair's weights still identical; training
    steps ours and stock apart): two fewer 61M-parameter models to build per layout, and
    --quick keeps the first layout only.
    """
    batch, device = cfg.batch, cfg.device
    layouts = cfg.layouts[:1] if cfg.reduced and cfg.quick else cfg.layouts
    out = []
    for dt in cfg.dtypes:
        if dt not in ("fp32", "bf16"):  # fp16 training would need a GradScaler: not a case here
            continue
        for lay in layouts:

            def make(lay=lay):
                x = torch.randn(batch, 3, 227, 227, device=device).to(memory_format=LAYOUTS[lay])
                y = torch.randint(0, 1000, (batch,), device=device)
                return (x, y)

            def getter(kind, index, purpose, lay=lay):
                return lambda: _models(kind, lay, device, purpose)[index]

            def compiled(purpose, lay=lay):
                return lambda: _compiled(lay, device, purpose, COMPILE_MODE[cfg.max_autotune])

            def gate(x, y, lay=lay, dt=dt):
                model, opt = _models("ours", lay, device, f"train-{dt}")
                stock = AlexNet(fused=False).to(device=device, memory_format=LAYOUTS[lay])
                return check_training_step(model, opt, stock, x, y, device, dt)

            fit = f"train-{dt}"
            use = fit if cfg.reduced else "infer"

            def infer_gate(x, y, lay=lay, dt=dt, use=use):
                model = _models("ours", lay, device, use)[0]
                return check_inference(model, _unfused_twin(lay, device), x, device, dt)

            extra = {"images": batch}
            train = {
                "ours": _train_step(getter("ours", 0, fit), getter("ours", 1, fit), device, dt),
                "eager": _train_step(getter("stock", 0, fit), getter("stock", 1, fit), device, dt),
            }
            infer = {
                "ours": _inference(getter("ours", 0, use), device, dt),
                "eager": _inference(getter("stock", 0, use), device, dt),
            }
            if cfg.compile:
                train["compile"] = _train_step(compiled(fit), getter("stock", 1, fit), device, dt)
                infer["compile"] = _inference(compiled(use), device, dt)
            flops = forward_flops_per_image() * batch
            tf32_on = True if dt == "fp32" and device == "cuda" else None
            pair = [
                Case(
                    "model",
                    f"AlexNet train step (SGD) b{batch}",
                    dt,
                    lay,
                    "fwd+bwd",
                    make,
                    train,
                    gate=gate,
                    tf32=tf32_on,
                    flops=3 * flops,
                    extra=dict(extra, what="forward + backward + SGD momentum step"),
                ),
                Case(
                    "model",
                    f"AlexNet inference b{batch}",
                    dt,
                    lay,
                    "fwd",
                    make,
                    infer,
                    gate=infer_gate,
                    tf32=tf32_on,
                    flops=flops,
                    extra=dict(extra, what="eval forward, no_grad"),
                ),
            ]
            out += pair[::-1] if cfg.reduced else pair
            out += _variant_cases(cfg, dt, lay, make, flops, tf32_on, [c.name for c in pair])
    return out


# The rows of what a user can reach with ours: name -> make_step / make_inference options.
# CUDA graphs need CUDA; compiling needs cfg.compile (on by default on CUDA only).
VARIANTS = {"ours + CUDA graph": dict(cuda_graph=True), "ours + torch.compile": dict(compile=True)}


def _primed(fn, *args):
    """fn(*args), after PRIME_CALLS more calls the first time: a graphed step or forward
    warms up and captures there, so no gate checks a warm-up and no timing holds a capture."""
    if id(fn) not in _PRIMED:
        _PRIMED.add(id(fn))
        for _ in range(PRIME_CALLS):
            fn(*args)
    return fn(*args)


def _variant(name, direction, dt, lay, device, mode):
    """The variant's (model, step) for training or (model, forward) for inference, over its
    own models, built on first use."""
    key = (name, direction, dt, lay, device)
    if key not in _VARIANTS:
        opts = dict(VARIANTS[name], amp_dtype=torch.bfloat16 if dt == "bf16" else None)
        if opts.get("compile"):
            opts["compile_mode"] = mode
        if direction == "fwd+bwd":
            model, opt = _models("ours", lay, device, f"train-{dt}-{name}")
            _VARIANTS[key] = (model, make_step(model, opt, **opts))
        else:
            model = _models("ours", lay, device, f"infer-{name}")[0].eval()
            _VARIANTS[key] = (model, make_inference(model, **opts))
    return _VARIANTS[key]


def _variant_cases(cfg, dt, lay, make, flops, tf32_on, base_names):
    """ "ours + CUDA graph" (CUDA only) and "ours + torch.compile" (cfg.compile) rows for the
    training step and inference, gated like the eager rows; their stock columns are the
    eager rows' (annotate copies them), not timed again."""
    device, batch, out = cfg.device, cfg.batch, []
    mode = COMPILE_MODE[cfg.max_autotune]
    for name, opts in VARIANTS.items():
        if (opts.get("cuda_graph") and device != "cuda") or (opts.get("compile") and not cfg.compile):
            continue
        label = name + (" max-autotune" if opts.get("compile") and mode else "")

        def train(x, y, name=name):
            model, step = _variant(name, "fwd+bwd", dt, lay, device, mode)
            model.train()
            return _primed(step, x, y)[0]

        def train_gate(x, y, name=name, opts=opts, train=train):
            """The check runs a step of its own (dropout off, IEEE fp32): the timed step is
            primed after it, as a bench/run.py gate warms up what it ran on the CPU."""
            model, opt = _models("ours", lay, device, f"train-{dt}-{name}")
            stock = AlexNet(fused=False).to(device=device, memory_format=LAYOUTS[lay])
            amp = torch.bfloat16 if dt == "bf16" else None
            facts = check_training_step(
                model,
                opt,
                stock,
                x,
                y,
                device,
                dt,
                warmup=3 if opts.get("cuda_graph") else 0,
                make_ours_step=lambda m, o: make_step(m, o, amp_dtype=amp, compile_mode=mode, **opts),
            )
            train(x, y)
            return facts

        def infer_gate(x, y, name=name):
            model, forward = _variant(name, "fwd", dt, lay, device, mode)
            return check_inference(model, _unfused_twin(lay, device), x, device, dt, run=lambda x: _primed(forward, x))

        def infer(x, y, name=name):
            return _primed(_variant(name, "fwd", dt, lay, device, mode)[1], x)

        extra = {"images": batch, "variant": label}
        cases = [
            Case(
                "model",
                f"{base_names[0]}, {label}",
                dt,
                lay,
                "fwd+bwd",
                make,
                {"ours": train},
                gate=train_gate,
                tf32=tf32_on,
                flops=3 * flops,
                extra=dict(extra, stock_from=base_names[0]),
            ),
            Case(
                "model",
                f"{base_names[1]}, {label}",
                dt,
                lay,
                "fwd",
                make,
                {"ours": infer},
                gate=infer_gate,
                tf32=tf32_on,
                flops=flops,
                extra=dict(extra, stock_from=base_names[1]),
            ),
        ]
        out += cases[::-1] if cfg.reduced else cases
    return out


def _variant_stock_columns(cfg, rows):
    """Copy the stock times (eager, compile) of each eager row into its variant rows, with
    the speed-ups; notes on what was copied and which variants were skipped."""
    for r in rows:
        base = next(
            (
                b
                for b in rows
                if b["case"] == r.get("stock_from") and (b["dtype"], b["layout"]) == (r["dtype"], r["layout"])
            ),
            None,
        )
        for impl in ("eager", "compile"):
            if base and base.get(f"{impl}_ms"):
                r[f"{impl}_ms"] = base[f"{impl}_ms"]
                if r.get("ours_ms"):
                    r[f"speedup_vs_{impl}"] = base[f"{impl}_ms"] / r["ours_ms"]
    notes = []
    if any(r.get("stock_from") for r in rows):
        notes.append(
            "model: the stock columns (eager ms, compile ms) of the 'ours + ...' rows are their eager "
            "row's, timed once; 'compile ms' is stock + torch.compile"
            + (" (mode max-autotune)" if cfg.max_autotune else "")
        )
    if cfg.device != "cuda":
        notes.append("model: the 'ours + CUDA graph' rows are CUDA-only: not run on CPU")
    if not cfg.compile:
        notes.append(
            "model: the 'ours + torch.compile' rows need torch.compile (on by default on CUDA, "
            "--compile on CPU): not run"
        )
    return notes


def peak_memory_rows(cfg):
    """Peak CUDA memory of a training step: ours vs stock (eager, compile). [] off CUDA.

    Each model is built fresh; the number is torch.cuda.max_memory_allocated() during the
    third step minus what was allocated before the model existed, so it covers weights,
    gradients, momentum, activations and workspaces.
    """
    if cfg.device != "cuda":
        return []
    _MODELS.clear()
    _COMPILED.clear()
    _VARIANTS.clear()
    _PRIMED.clear()
    rows = []
    impls = ["ours", "eager"] + (["compile"] if cfg.compile else [])
    for dt in cfg.dtypes:
        if dt not in ("fp32", "bf16"):
            continue
        for lay in cfg.layouts:
            for impl in impls:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.manual_seed(0)
                model = AlexNet() if impl == "ours" else reference_alexnet()
                model = model.to(device="cuda", memory_format=LAYOUTS[lay])
                opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                run = torch.compile(model, dynamic=False) if impl == "compile" else model
                step = _train_step(lambda: run, lambda: opt, "cuda", dt)
                x = torch.randn(cfg.batch, 3, 227, 227, device="cuda").to(memory_format=LAYOUTS[lay])
                y = torch.randint(0, 1000, (cfg.batch,), device="cuda")
                for i in range(3):
                    if i == 2:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    step(x, y)
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - base
                rows.append(
                    {
                        "group": "model",
                        "case": f"AlexNet train step b{cfg.batch} peak memory",
                        "impl": impl,
                        "dtype": dt,
                        "layout": lay,
                        "batch": cfg.batch,
                        "peak_mib": round(peak / 2**20, 1),
                    }
                )
                model = opt = run = step = x = y = None  # (None, not del: the lambdas name them)
    torch.cuda.empty_cache()
    return rows


def annotate(cfg, rows):
    """Peak training memory (CUDA only) into the training-step rows, as ``<impl>_peak_mib``
    (ours, eager, compile), and as report notes; the variant rows' stock columns from their
    eager rows. bench/run.py calls this after the group."""
    notes = _variant_stock_columns(cfg, rows)
    peaks = peak_memory_rows(cfg)
    for r in rows:
        if r.get("direction") == "fwd+bwd":
            for p in peaks:
                if (p["dtype"], p["layout"]) == (r["dtype"], r["layout"]):
                    r[f"{p['impl']}_peak_mib"] = p["peak_mib"]
    for dt in cfg.dtypes:
        for lay in cfg.layouts:
            sel = [p for p in peaks if p["dtype"] == dt and p["layout"] == lay]
            if sel:
                notes.append(
                    f"peak training memory, {dt} {lay}, batch {cfg.batch}: "
                    + ", ".join(f"{p['impl']} {p['peak_mib']:,.0f} MiB" for p in sel)
                )
    return notes
