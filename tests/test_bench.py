"""bench/compare.py on two hand-written results files, and bench/run.py's report tables."""

import json

import pytest

from conftest import BENCH
from conftest import load_bench_module as _load


compare = _load("compare")


def _row(case, ms, q1=None, q3=None, group="lrn", **kw):
    r = {"group": group, "case": case, "dtype": "fp32", "layout": "nchw", "direction": "fwd", "ours_ms": ms}
    if q1 is not None:
        r.update(ours_q1_ms=q1, ours_q3_ms=q3, ours_n=20)
    r.update(kw)
    return r


def _results(rows, device="NVIDIA H100"):
    return {
        "environment": {"device": "cuda", "gpu": device, "date": "2026-01-01"},
        "batch": 128,
        "quick": False,
        "reduced": False,
        "rows": rows,
    }


OLD = _results(
    [
        _row("steady", 1.00, 0.99, 1.01),
        _row("slower", 1.00, 0.99, 1.01),
        _row("noisy", 1.00, 0.70, 1.30),  # 60% IQR: a 20% slow-down is within its noise
        _row("noisy but much slower", 1.00, 0.90, 1.10),
        _row("quicker", 1.00, 0.99, 1.01),
        _row("breaks", 1.00),
        _row("dropped", 1.00),
        {
            "group": "loop",
            "case": "AlexNet loop b128",
            "dtype": "bf16",
            "layout": "nhwc",
            "direction": "fwd+bwd",
            "bare_ms": 10.0,
            "bare_q1_ms": 9.9,
            "bare_q3_ms": 10.1,
            "loop_ms": 10.5,
            "loop_q1_ms": 10.4,
            "loop_q3_ms": 10.6,
        },
    ]
)
NEW = _results(
    [
        _row("steady", 1.05, 1.04, 1.06),
        _row("slower", 1.20, 1.19, 1.21),
        _row("noisy", 1.20, 0.90, 1.50),
        _row("noisy but much slower", 1.50, 1.40, 1.60),
        _row("quicker", 0.50, 0.49, 0.51),
        {**_row("breaks", None), "error": "WRONG: AssertionError: max abs diff 0.5"},
        _row("brand new", 2.00),
        {
            "group": "loop",
            "case": "AlexNet loop b128",
            "dtype": "bf16",
            "layout": "nhwc",
            "direction": "fwd+bwd",
            "bare_ms": 10.0,
            "bare_q1_ms": 9.9,
            "bare_q3_ms": 10.1,
            "loop_ms": 14.0,
            "loop_q1_ms": 13.9,
            "loop_q3_ms": 14.1,
        },
    ]
)


@pytest.fixture
def files(tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(OLD))
    new.write_text(json.dumps(NEW))
    return str(old), str(new)


def _verdicts(out):
    v = {}
    for line in out.splitlines():
        for case in (
            "steady",
            "slower",
            "noisy",
            "noisy but much slower",
            "quicker",
            "breaks",
            "dropped",
            "brand new",
            "AlexNet loop b128",
        ):
            if line.startswith(case + " "):
                v.setdefault(case, []).append(line)
    return v


def test_compare_flags_regressions_beyond_noise_errors_missing_and_new(files, capsys):
    rc = compare.main(list(files))
    out = capsys.readouterr().out
    v = _verdicts(out)
    assert rc == 1
    assert "REGRESSION" not in v["steady"][0]  # +5% < 10%
    assert "REGRESSION (> 10%)" in v["slower"][0]  # +20%, noise 2%
    assert "REGRESSION" not in v["noisy"][0] and "within noise" in v["noisy"][0]  # +20% < 50% IQR
    assert "REGRESSION (> 20%)" in v["noisy but much slower"][0]  # +50% > 20% IQR
    assert "faster" in v["quicker"][0]
    assert "ERROR (passed before)" in v["breaks"][0]
    assert "MISSING" in v["dropped"][0]
    assert v["brand new"][0].rstrip().endswith("new")
    loop = {line.split()[6]: line for line in v["AlexNet loop b128"]}  # "AlexNet loop b128 bf16 nhwc fwd+bwd <timing>"
    assert "REGRESSION" in loop["loop"] and "REGRESSION" not in loop["bare"]
    assert "3 regression(s)" in out and "1 error(s)" in out and "1 missing" in out and "1 new" in out
    assert "warning" not in out


def test_compare_exit_codes(files, tmp_path, capsys):
    old, _ = files
    assert compare.main([old, old]) == 0  # a run against itself
    # only missing cases: fails unless --allow-missing
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(_results([r for r in OLD["rows"] if r["case"] != "dropped"])))
    assert compare.main([old, str(partial)]) == 1
    assert compare.main([old, str(partial), "--allow-missing"]) == 0
    # a looser threshold turns the +20% (noise 2%) into no regression, but not the +50%
    out_lines, counts = compare.compare(OLD, NEW, threshold=0.3)
    assert counts["regression"] == 2  # "noisy but much slower" (+50%) and the loop (+33%)
    capsys.readouterr()


def test_compare_warns_across_devices(capsys):
    lines, _ = compare.compare(OLD, _results(NEW["rows"], device="NVIDIA A100"), 0.1)
    assert any("different GPU" in line for line in lines)


def test_report_groups_tables_and_footnotes_errors():
    pytest.importorskip("torch")
    run = _load("run")
    rows = [
        _row(
            "LRN a",
            1.0,
            0.9,
            1.1,
            eager_ms=2.0,
            speedup_vs_eager=2.0,
            compile_error="BackendCompilerFailed: boom",
            ours_host_ms=0.25,
        ),
        {**_row("pool b", None, group="max_pool2d"), "error": "WRONG: AssertionError: differs"},
        _row("train", 10.0, group="model", direction="fwd+bwd", ours_peak_mib=1193.0, eager_peak_mib=2201.0),
    ]
    text = run.tables(rows, ["lrn", "max_pool2d", "model"])
    assert text.index("## lrn") < text.index("## max_pool2d") < text.index("## model")
    lrn = text[text.index("## lrn") : text.index("## max_pool2d")]
    assert "error [1]" in lrn and "[1] compile: BackendCompilerFailed: boom" in lrn
    assert "20% (n=20)" in lrn  # IQR / median
    assert "peak MiB" not in lrn  # empty columns are left out
    assert "| ours host ms |" in lrn and "| 0.250 |" in lrn
    pool = text[text.index("## max_pool2d") : text.index("## model")]
    assert "[1] WRONG: AssertionError: differs" in pool
    model = text[text.index("## model") :]
    assert "1,193 / 2,201 / -" in model


def test_loop_group_runs_on_cpu(monkeypatch):
    """bench/cases/loop.py end to end on the CPU (the demo's small net, batch 2, one worker)."""
    pytest.importorskip("torchvision")
    monkeypatch.syspath_prepend(BENCH)
    from common import Config

    loop = _load("cases/loop")
    cfg = Config(
        device="cpu", batch=2, dtypes=["fp32"], layouts=["nchw", "nhwc"], quick=True, compile=False, reduced=True
    )
    seen = []
    rows, notes = loop.run_group(cfg, lambda i, n, row: seen.append((i, n)))
    assert seen == [(1, 1)] and len(rows) == 1  # --quick on CPU: the first layout only
    row = rows[0]
    assert "error" not in row, row.get("error")
    for impl in ("bare", "loop", "augment", "data"):
        assert row[f"{impl}_ms"] > 0 and row[f"{impl}_q1_ms"] <= row[f"{impl}_ms"] <= row[f"{impl}_q3_ms"]
    assert row["loop_vs_bare_pct"] == pytest.approx(100 * row["bare_ms"] / row["loop_ms"])
    assert row["arch"] == "small" and row["workers"] == 1
    assert len(notes) == 1 and "CPU smoke run" in notes[0]


def test_run_case_gate_failure_is_wrong_and_not_timed():
    """A case's own gate replaces the ours-vs-eager comparison: what it returns goes into
    the row; when it raises, the row is WRONG and nothing is timed."""
    pytest.importorskip("torch")
    import torch

    run = _load("run")
    from common import Case, Config  # the module run.py imported

    cfg = Config(device="cpu", batch=1, dtypes=["fp32"], layouts=["nchw"], quick=True, compile=False)
    impls = {"ours": lambda x: x + 1, "eager": lambda x: x + 1}

    def case(gate):
        return Case("model", "fake", "fp32", "nchw", "fwd", lambda: (torch.ones(4),), impls, gate=gate)

    row = run.run_case(case(lambda x: {"check_max_rel_err": 0.0}), cfg, {"copy_GBps": 1.0})
    assert "error" not in row and row["check_max_rel_err"] == 0.0 and row["ours_ms"] > 0

    def wrong(x):
        raise AssertionError("features.conv1.weight gradient off")

    row = run.run_case(case(wrong), cfg, {"copy_GBps": 1.0})
    assert row["error"] == "WRONG: AssertionError: features.conv1.weight gradient off"
    assert "ours_ms" not in row and "eager_ms" not in row


def test_training_gate_catches_a_wrong_gradient(monkeypatch):
    """The model case's training gate (bench/cases/model.py), at width 1/8 on the CPU: the
    fused AlexNet passes against AlexNet(fused=False) with the same weights, dropout
    included (the gate turns it off); one weight gradient 5% off fails it, named. In
    float64: in fp32 a near-tied max-pool window can route a gradient differently in the
    two models, and at this width that alone can cost a few percent (see TRAIN_RTOL)."""
    pytest.importorskip("torch")
    import torch

    from alexnet_cuda.models import AlexNet

    monkeypatch.syspath_prepend(BENCH)
    model_case = _load("cases/model")
    x = torch.randn(2, 3, 227, 227, dtype=torch.float64)
    y = torch.randint(0, 1000, (2,))

    def gate(perturb=None):
        torch.manual_seed(0)
        ours = AlexNet(width=0.125).double()
        if perturb:
            ours.features.conv3.weight.register_hook(perturb)
        stock = AlexNet(fused=False, width=0.125).double()
        return model_case.check_training_step(ours, model_case._sgd(ours), stock, x, y, "cpu", "fp32")

    facts = gate()
    assert facts["check_max_rel_err"] < 1e-5, facts
    with pytest.raises(AssertionError, match="worst: features.conv3.weight gradient 0.05"):
        gate(lambda grad: grad * 1.05)


def test_inference_gate_catches_a_wrong_layer(monkeypatch):
    """The inference gate notices a 5% error in conv1's output (with the paper's biases
    kept, it would move the logits by ~5e-5 relative: the gate zeroes them)."""
    import torch

    from alexnet_cuda.models import AlexNet

    monkeypatch.syspath_prepend(BENCH)
    model_case = _load("cases/model")
    x = torch.randn(2, 3, 227, 227, dtype=torch.float64)
    torch.manual_seed(0)
    ours = AlexNet(width=0.125).double()
    twin = AlexNet(fused=False, width=0.125).double()
    facts = model_case.check_inference(ours, twin, x, "cpu", "fp32")
    assert facts["check_max_rel_err"] < 1e-6, facts
    wrong = AlexNet(width=0.125).double()
    wrong.load_state_dict(ours.state_dict())
    wrong.features.conv1.register_forward_hook(lambda module, inputs, out: out * 1.05)
    with pytest.raises(AssertionError, match=r"off by 0\.0[3-9]"):
        model_case.check_inference(wrong, twin, x, "cpu", "fp32")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--only", "modle"],
            "argument --only: modle given; choose from lrn,max_pool2d,relu_lrn_max_pool2d,conv2d_relu,model,loop",
        ),
        (["--dtype", "fp32,fp64"], "argument --dtype: fp64 given; choose from fp32,bf16,fp16"),
        (["--layout", "channels_last"], "argument --layout: channels_last given; choose from nchw,nhwc"),
        (["--layout", ","], "argument --layout: nothing given; choose from nchw,nhwc"),
    ],
)
def test_run_rejects_unknown_groups_dtypes_and_layouts(argv, message, capsys):
    pytest.importorskip("torch")
    run = _load("run")
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    args = run.parse_args(["--only", "model,lrn", "--dtype", "bf16", "--layout", "nhwc"])
    assert (args.only, args.dtype, args.layout) == (["model", "lrn"], ["bf16"], ["nhwc"])
    assert run.parse_args([]).only == run.GROUPS


def test_run_case_reports_failing_inputs_as_the_case_error():
    pytest.importorskip("torch")
    run = _load("run")
    from common import Case, Config

    def make_inputs():
        raise KeyError("channels_last")

    cfg = Config(device="cpu", batch=1, dtypes=["fp32"], layouts=["nchw"], quick=True, compile=False)
    case = Case("model", "fake", "fp32", "nchw", "fwd", make_inputs, {"ours": lambda: None})
    assert run.run_case(case, cfg, {"copy_GBps": 1.0})["error"] == "inputs: KeyError: 'channels_last'"


def test_run_exit_status_counts_our_failures_not_stock_ones():
    pytest.importorskip("torch")
    run = _load("run")
    assert run.exit_status([_row("ok", 1.0)], []) == 0
    assert run.exit_status([_row("stock fails", 1.0, eager_error="E", compile_error="C")], []) == 0
    assert run.exit_status([_row("ours fails", None, ours_error="RuntimeError: boom")], []) == 1
    assert run.exit_status([{**_row("wrong", None), "error": "WRONG: ..."}], []) == 1
    assert run.exit_status([_row("ok", 1.0)], ["Interrupted by Ctrl-C after 1 cases: ..."]) == 1


def test_run_case_sets_records_and_restores_tf32():
    """A case's tf32 sets both TF32 switches while it runs (gate and timings), goes into the
    row (which then gets the TF32 matmul ceiling), and the old values come back after."""
    pytest.importorskip("torch")
    import torch

    run = _load("run")
    from common import Case, Config

    seen = []

    def ours(x):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return x

    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, False
    try:
        cfg = Config(device="cpu", batch=1, dtypes=["fp32"], layouts=["nchw"], quick=True, compile=False)
        case = Case(
            "model",
            "fake",
            "fp32",
            "nchw",
            "fwd",
            lambda: (torch.ones(4),),
            {"ours": ours, "eager": lambda x: x},
            tf32=True,
            flops=10**6,
        )
        row = run.run_case(case, cfg, {"copy_GBps": 1.0, "matmul_tf32_TFLOPs": 1.0})
        assert seen and set(seen) == {(True, True)}
        assert row["tf32"] is True and row["pct_matmul"] > 0
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (False, False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_compare_reports_fixed_cases():
    """A case that was WRONG in the old run and passes in the new one is listed as fixed
    (it has no old timing to compare with), and does not fail the comparison."""
    old = _results([{**_row("mended", None), "error": "WRONG: AssertionError: differs"}, _row("steady", 1.0)])
    new = _results([_row("mended", 1.0), _row("steady", 1.0)])
    lines, counts = compare.compare(old, new, 0.1)
    mended = [line for line in lines if line.startswith("mended ")]
    assert len(mended) == 1 and "fixed (was ERROR: WRONG: AssertionError: differs)" in mended[0]
    assert counts["fixed"] == 1 and counts["error"] == 0 and "1 fixed" in lines[-1]


def test_quick_op_groups_pass_their_gates_on_cpu(tmp_path, capsys):
    """Every op group's CPU cases pass their correctness gate (a case whose check is
    miswired, e.g. a reference passed where the gate goes, fails the whole run)."""
    run = _load("run")
    assert (
        run.main(["--quick", "--only", "lrn,max_pool2d,relu_lrn_max_pool2d", "--no-compile", "--out", str(tmp_path)])
        == 0
    )
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert rows and not [r for r in rows if "error" in r or "ours_error" in r]


def test_host_group_runs_on_cpu(monkeypatch):
    """bench/cases/host.py end to end on the CPU (--quick): every op row and the training
    step pass their gates and get ours/stock host times; the thread count comes back."""
    import torch

    monkeypatch.syspath_prepend(BENCH)
    from common import Config

    host = _load("cases/host")
    cfg = Config(device="cpu", batch=2, dtypes=["fp32"], layouts=["nchw"], quick=True, compile=False, reduced=True)
    threads = torch.get_num_threads()
    seen = []
    rows, notes = host.run_group(cfg, lambda i, n, row: seen.append((i, n)))
    assert torch.get_num_threads() == threads
    assert len(rows) == 2 * len(host.OPS) + 1 and seen[-1] == (len(rows), len(rows))
    for row in rows:
        assert "error" not in row, row
        assert row["group"] == "host" and row["ours_ms"] > 0 and row["eager_ms"] > 0
        assert row["ours_over_stock"] == pytest.approx(row["ours_ms"] / row["eager_ms"])
        assert row["ours_q1_ms"] <= row["ours_ms"] <= row["ours_q3_ms"]
    assert {r["direction"] for r in rows} == {"fwd", "fwd+bwd"}
    assert "train step" in rows[-1]["case"] and rows[-1]["check_max_rel_err"] < 0.02
    assert len(notes) == 1 and "one thread" in notes[0]
    table = _load("run").tables(rows, ["host"])
    assert "| ours us | stock us | ours / stock |" in table


def test_model_variant_gates_run_the_variant(monkeypatch):
    """The 'ours + ...' rows' gates check the variant itself: the compiled step (aot_eager:
    Dynamo and AOTAutograd without Inductor's minute of code generation) and a compiled
    forward pass pass against AlexNet(fused=False); a forward 5% off fails. On CPU without
    --compile no variant row is made, and the notes say why."""
    import torch

    from alexnet_cuda.models import AlexNet
    from alexnet_cuda.train.step import make_inference, make_step

    monkeypatch.syspath_prepend(BENCH)
    from common import Config

    model_case = _load("cases/model")
    x = torch.randn(2, 3, 227, 227, dtype=torch.float64)
    y = torch.randint(0, 1000, (2,))
    torch.manual_seed(0)
    ours = AlexNet(width=0.125).double()
    twin = AlexNet(fused=False, width=0.125).double()
    torch._dynamo.reset()
    facts = model_case.check_training_step(
        ours,
        None,
        twin,
        x,
        y,
        "cpu",
        "fp32",
        make_ours_step=lambda m, o: make_step(m, o, compile=True, compile_backend="aot_eager"),
    )
    assert facts["check_max_rel_err"] < 1e-5, facts
    ours.eval()
    forward = make_inference(ours, compile=True, compile_backend="aot_eager")
    facts = model_case.check_inference(ours, twin, x, "cpu", "fp32", run=forward)
    assert facts["check_max_rel_err"] < 1e-6 and facts["check_worst"] == "logits", facts
    assert ours.features.conv2.bias.abs().sum() > 0  # the biases zeroed for the check are back
    with pytest.raises(AssertionError, match=r"logits off by 0\.0[3-9]"):
        model_case.check_inference(ours, twin, x, "cpu", "fp32", run=lambda x: forward(x) * 1.05)
    torch._dynamo.reset()
    cfg = Config(device="cpu", batch=2, dtypes=["fp32"], layouts=["nchw"], quick=True, compile=False, reduced=True)
    assert not [c for c in model_case.cases(cfg) if "variant" in c.extra]
    notes = model_case._variant_stock_columns(cfg, [])
    assert any("CUDA-only" in n for n in notes) and any("--compile on CPU" in n for n in notes)
