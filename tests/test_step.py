"""alexnet_cuda.train.step: the eager, compiled and CUDA-graphed training step (and inference).

The compiled step is tested with the "aot_eager" backend: Dynamo and AOTAutograd -- where a
graph break or an op without a fake/autograd implementation shows -- without Inductor's
code generation, which takes about a minute per network on a 2-core CPU. The net is the
demo's SmallAlexNet converted to our ops (all four of them run in it), not AlexNet.
"""

import copy
import logging

import pytest
import torch

import alexnet_cuda
from alexnet_cuda.train.model_factory import SmallAlexNet
from alexnet_cuda.train.optim import PaperSGD
from alexnet_cuda.train.step import make_inference, make_step

from conftest import CUDA, NO_CUDA_REASON

OUR_OPS = {"conv2d_relu", "relu_lrn_max_pool2d", "max_pool2d"}


def _small_ours(device="cpu", dropout=0.0):
    torch.manual_seed(0)
    return alexnet_cuda.convert(SmallAlexNet(10, width=16, crop=24, dropout=dropout)).to(device)


def _batch(n=4, device="cpu"):
    return torch.randn(n, 3, 24, 24, device=device), torch.randint(0, 10, (n,))


def _run(step_of, model, batches):
    """Losses and final parameters of one step per batch, from a copy of ``model``."""
    model = copy.deepcopy(model)
    opt = PaperSGD(model.parameters(), lr=0.01)
    step = step_of(model, opt)
    losses = [step(x, y)[0].item() for x, y in batches]
    return step, losses, [p.detach().clone() for p in model.parameters()]


def _counting_backend(graphs):
    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return backend


def test_eager_step_is_forward_loss_backward_update():
    model = _small_ours()
    x, y = _batch()
    ref = copy.deepcopy(model)
    opt = PaperSGD(ref.parameters(), lr=0.01)
    logits = ref(x)
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum") / y.numel()
    opt.zero_grad()
    loss.backward()
    opt.step()
    step, losses, params = _run(lambda m, o: make_step(m, o), model, [(x, y)])
    assert step.mode == "eager" and step.note is None
    assert losses == [loss.item()]
    for p, q in zip(params, ref.parameters()):
        assert torch.equal(p, q)


def test_compiled_step_matches_eager_with_our_ops_in_one_graph():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = _small_ours()
    batches = [_batch() for _ in range(3)]
    graphs = []
    step, compiled, c_params = _run(
        lambda m, o: make_step(m, o, compile=True, compile_backend=_counting_backend(graphs)), model, batches
    )
    _, eager, e_params = _run(lambda m, o: make_step(m, o), model, batches)
    assert step.mode == "compile"
    # One graph for the whole model (traced once: same shapes), no break anywhere in it.
    assert len(graphs) == 1, [g.code for g in graphs]
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    targets = {str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"}
    ours = {name for name in OUR_OPS if any(f"alexnet_cuda.{name}" in t for t in targets)}
    assert ours == OUR_OPS, sorted(targets)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for p, q in zip(c_params, e_params):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


def test_compiled_step_through_aot_autograd_matches_eager():
    """The compiled step with AOTAutograd (our ops' fake and autograd implementations at work)."""
    torch._dynamo.reset()
    model = _small_ours()
    batches = [_batch() for _ in range(2)]
    _, compiled, c_params = _run(
        lambda m, o: make_step(m, o, compile=True, compile_backend="aot_eager"), model, batches
    )
    _, eager, e_params = _run(lambda m, o: make_step(m, o), model, batches)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for p, q in zip(c_params, e_params):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.skipif(CUDA, reason="the fallback is for machines without CUDA")
def test_cuda_graph_step_falls_back_to_eager_on_cpu_and_says_why(caplog):
    model = _small_ours()
    batches = [_batch() for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="alexnet_cuda.train"):
        step, losses, params = _run(lambda m, o: make_step(m, o, cuda_graph=True), model, batches)
    assert step.mode == "eager" and "no CUDA device" in step.note
    assert "CUDA graphs not used: no CUDA device" in caplog.text
    _, eager, e_params = _run(lambda m, o: make_step(m, o), model, batches)
    assert losses == eager
    forward = make_inference(model.eval(), cuda_graph=True)
    assert forward.mode == "eager" and "no CUDA device" in forward.note
    x, _ = _batch()
    assert torch.equal(forward(x), make_inference(model)(x))


def test_cuda_graph_step_refuses_a_model_on_two_devices():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4, device="meta"))
    with pytest.raises(ValueError, match="on 2 devices .* drop --model-parallel or --cuda-graphs"):
        make_step(model, torch.optim.SGD(model.parameters(), lr=0.1), cuda_graph=True)


def test_compiled_inference_matches_eager():
    torch._dynamo.reset()
    model = _small_ours().eval()
    x, _ = _batch()
    compiled = make_inference(model, compile=True, compile_backend="aot_eager")
    assert compiled.mode == "compile"
    torch.testing.assert_close(compiled(x), make_inference(model)(x), rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


# ---- CUDA: the captured step (skipped without a GPU) ----

cuda = pytest.mark.skipif(not CUDA, reason=NO_CUDA_REASON)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("amp, channels_last", [(None, False), (torch.bfloat16, True)])
def test_cuda_graph_step_matches_eager_through_an_lr_change_and_a_short_batch(amp, channels_last):
    """Warm-up, capture, replays, a new lr (captured again), a smaller last batch (eager),
    then replays again: every loss and the final weights as the eager step's."""
    model = _small_ours("cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batches = [(x.cuda().contiguous(memory_format=fmt), y) for x, y in (_batch() for _ in range(9))]
    batches.insert(7, tuple(t[:3] for t in _batch(device="cuda")))

    def run(graphed):
        m = copy.deepcopy(model)
        opt = PaperSGD(m.parameters(), lr=0.01)
        step = make_step(m, opt, amp_dtype=amp, cuda_graph=graphed)
        losses = []
        for i, (x, y) in enumerate(batches):
            if i == 6:
                opt.param_groups[0]["lr"] = 0.001
            losses.append(step(x, y)[0])
        return step, torch.stack(losses).tolist(), list(m.parameters())

    graphed, g_losses, g_params = run(True)
    _, e_losses, e_params = run(False)
    assert graphed.mode == "cuda_graph" and graphed.graph is not None
    tol = dict(rtol=2e-2, atol=1e-3) if amp else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_losses, e_losses, **tol)
    for p, q in zip(g_params, e_params):
        torch.testing.assert_close(p, q, **tol)
    assert all(p.grad is not None for p in g_params)


@cuda
@pytest.mark.cuda
def test_cuda_graph_step_returns_fresh_tensors_and_graphed_inference_matches():
    model = _small_ours("cuda")
    opt = PaperSGD(model.parameters(), lr=0.01)
    step = make_step(model, opt, cuda_graph=True, warmup=1)
    x, y = _batch(device="cuda")
    losses = [step(x, y)[0] for _ in range(4)]  # warm-up, capture + replay, 2 replays
    assert len({t.data_ptr() for t in losses}) == 4 and len(set(torch.stack(losses).tolist())) == 4
    model.eval()
    forward = make_inference(model, cuda_graph=True, warmup=1)
    outs = [forward(x) for _ in range(3)]  # warm-up, capture + replay, replay
    assert forward.mode == "cuda_graph" and forward.graph is not None
    ref = make_inference(model)(x)
    for out in outs:
        torch.testing.assert_close(out, ref)


# ---- the trainer's flags: --cuda-graphs and --compile go through make_step ----


def _synthetic_cfg(tmp_path, **kw):
    from alexnet_cuda.train import TrainConfig

    base = dict(
        synthetic=16,
        synthetic_classes=10,
        arch="small",
        width=8,
        image_size=28,
        crop=24,
        epochs=1,
        batch_size=8,
        workers=0,
        device="cpu",
        output=str(tmp_path / "run"),
        progress="off",
        tensorboard=False,
        plot=False,
        log_every=1,
        input_scale=1 / 64,
        schedule="constant",
        dropout=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_cli_parses_cuda_graphs_and_refuses_it_with_model_parallel():
    from alexnet_cuda.train.config import check_config, config_from_args

    cfg, _, given = config_from_args(["--synthetic", "8", "--cuda-graphs", "--compile"])
    assert cfg.cuda_graphs and cfg.compile and {"cuda_graphs", "compile"} <= given
    assert not config_from_args(["--synthetic", "8"])[0].cuda_graphs
    cfg, _, _ = config_from_args(["--synthetic", "8", "--cuda-graphs", "--model-parallel"])
    assert any("--cuda-graphs with --model-parallel" in p for p in check_config(cfg))


@pytest.mark.skipif(CUDA, reason="the fallback is for machines without CUDA")
def test_train_with_cuda_graphs_on_cpu_says_so_and_trains_as_without(tmp_path, caplog):
    from alexnet_cuda.train import train

    plain = train(_synthetic_cfg(tmp_path / "plain"))["step_losses"]
    with caplog.at_level(logging.WARNING, logger="alexnet_cuda.train"):
        graphed = train(_synthetic_cfg(tmp_path / "graphed", cuda_graphs=True))["step_losses"]
    assert "CUDA graphs not used: no CUDA device" in caplog.text
    assert graphed == plain and len(plain) == 2


def test_train_with_compile_runs_the_compiled_step(tmp_path, monkeypatch):
    """--compile trains through make_step's torch.compile (here with the aot_eager backend:
    see the module docstring) and matches the eager run."""
    from alexnet_cuda.train import train

    compiled = []
    real_compile = torch.compile

    def aot_eager_compile(model, **kw):
        compiled.append(type(model).__name__)
        return real_compile(model, backend="aot_eager", dynamic=False)

    plain = train(_synthetic_cfg(tmp_path / "plain"))["step_losses"]
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", aot_eager_compile)
    losses = train(_synthetic_cfg(tmp_path / "compiled", compile=True))["step_losses"]
    torch._dynamo.reset()
    assert compiled == ["SmallAlexNet"]
    torch.testing.assert_close(losses, plain, rtol=1e-4, atol=1e-5)
