"""The per-shape choice between Triton and cuDNN (ops/conv2d_relu/select.py), with a fake timer:
no GPU, no kernels. The backward that uses it is tested under the Triton interpreter
(_conv2d_relu_interpret_cases.py: test_backward_with_selection_matches_float64)."""

import json
import logging

import pytest

from alexnet_cuda.ops.conv2d_relu import select


class FakeTimer:
    def __init__(self, times):
        self.times, self.calls = times, []

    def __call__(self, fn):
        self.calls.append(fn())  # each candidate returns its name
        return self.times[self.calls[-1]]


def _candidates():
    return {"triton": lambda: "triton", "cudnn": lambda: "cudnn"}


@pytest.mark.parametrize(
    "triton_ms, expected", [(1.0, "triton"), (3.0, "cudnn"), (1.99, "cudnn")], ids=["faster", "slower", "within_margin"]
)
def test_picks_the_faster_and_cudnn_on_ties(triton_ms, expected):
    timer = FakeTimer({"triton": triton_ms, "cudnn": 2.0})
    selector = select.Selector(timer=timer, tag="t")
    assert selector.choose("dgrad", "k", _candidates()) == expected
    assert sorted(timer.calls) == ["cudnn", "triton"]


def test_the_choice_is_cached_in_memory_and_on_disk(tmp_path, caplog):
    path = str(tmp_path / "sub" / "choices.json")
    timer = FakeTimer({"triton": 1.0, "cudnn": 2.0})
    selector = select.Selector(timer=timer, path=path, tag="gpu")
    with caplog.at_level(logging.DEBUG, logger="alexnet_cuda.conv2d_relu"):
        assert selector.choose("dgrad", "k1", _candidates()) == "triton"
    assert "dgrad k1: triton" in caplog.text  # the debug line naming the choice
    assert selector.choose("dgrad", "k1", _candidates()) == "triton"
    assert len(timer.calls) == 2  # timed once
    with open(path) as f:
        saved = json.load(f)
    assert saved == {"gpu|dgrad|k1": {"choice": "triton", "times": {"triton": 1.0, "cudnn": 2.0}}}
    # A new process reads it back without timing; another GPU or version does not.
    other_timer = FakeTimer({"triton": 5.0, "cudnn": 2.0})
    assert select.Selector(timer=other_timer, path=path, tag="gpu").choose("dgrad", "k1", _candidates()) == "triton"
    assert other_timer.calls == []
    assert select.Selector(timer=other_timer, path=path, tag="other").choose("dgrad", "k1", _candidates()) == "cudnn"
    assert select.Selector(path=path, tag="gpu").choices().keys() == {"gpu|dgrad|k1", "other|dgrad|k1"}


def test_no_timing_while_capturing_or_tracing(monkeypatch):
    """Under CUDA-graph capture or torch.compile: the cached choice, else cuDNN, uncached."""
    timer = FakeTimer({"triton": 1.0, "cudnn": 2.0})
    selector = select.Selector(timer=timer, tag="t")
    monkeypatch.setattr(select, "_can_time", lambda real_inputs=False: False)
    assert selector.choose("dgrad", "k", _candidates()) == "cudnn"
    assert timer.calls == [] and selector.choices() == {}
    monkeypatch.setattr(select, "_can_time", lambda real_inputs=False: True)
    assert selector.choose("dgrad", "k", _candidates()) == "triton"
    monkeypatch.setattr(select, "_can_time", lambda real_inputs=False: False)
    assert selector.choose("dgrad", "k", _candidates()) == "triton"


def test_a_broken_cache_file_is_retimed(tmp_path):
    path = tmp_path / "choices.json"
    path.write_text("{not json")
    timer = FakeTimer({"triton": 1.0, "cudnn": 2.0})
    assert select.Selector(timer=timer, path=str(path), tag="t").choose("dgrad", "k", _candidates()) == "triton"
    assert json.loads(path.read_text())["t|dgrad|k"]["choice"] == "triton"


def test_cache_path_is_in_the_library_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("ALEXNET_CUDA_CACHE", str(tmp_path))
    assert select.cache_path() == str(tmp_path / "conv_select.json")


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        "null",
        '{"t|dgrad|k": {"times": {}}}',
        '{"t|dgrad|k": {"choice": ["triton"]}}',
        "[" * 100_000 + "]" * 100_000,
        '{"t|dgrad|k": 3}',
    ],
    ids=["list", "null", "no_choice", "list_choice", "deep", "number"],
)
def test_a_cache_file_of_another_shape_is_a_miss_with_one_warning(tmp_path, content, caplog):
    """Valid JSON that is not what choose() writes is a cache miss (timed again), never an
    AttributeError/TypeError/KeyError/RecursionError in the conv call; one warning names the file."""
    path = tmp_path / "conv_select.json"
    path.write_text(content)
    timer = FakeTimer({"triton": 1.0, "cudnn": 2.0})
    selector = select.Selector(timer=timer, path=str(path), tag="t")
    with caplog.at_level(logging.WARNING, logger="alexnet_cuda"):
        assert selector.choose("dgrad", "k", _candidates()) == "triton"
        assert selector.choose("dgrad", "k2", _candidates()) == "triton"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    assert sorted(timer.calls) == ["cudnn", "cudnn", "triton", "triton"]
    assert json.loads(path.read_text())["t|dgrad|k"]["choice"] == "triton"


def test_writers_merge_their_choices(tmp_path):
    """Two processes that loaded the file before either wrote keep each other's entries."""
    path = str(tmp_path / "conv_select.json")
    first = select.Selector(timer=FakeTimer({"triton": 1.0, "cudnn": 2.0}), path=path, tag="t")
    second = select.Selector(timer=FakeTimer({"triton": 3.0, "cudnn": 2.0}), path=path, tag="t")
    assert first.choices() == {} and second.choices() == {}  # both have read the (absent) file
    first.choose("dgrad", "a", _candidates())
    second.choose("dgrad", "b", _candidates())
    with open(path) as f:
        saved = json.load(f)
    assert {k: v["choice"] for k, v in saved.items()} == {"t|dgrad|a": "triton", "t|dgrad|b": "cudnn"}


def _choose_many(path, worker, count):
    selector = select.Selector(timer=FakeTimer({"triton": 1.0, "cudnn": 2.0}), path=path, tag="t")
    for i in range(count):
        selector.choose("dgrad", f"{worker}-{i}", _candidates())


def test_concurrent_processes_lose_no_choice(tmp_path):
    import multiprocessing

    path = str(tmp_path / "conv_select.json")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_choose_many, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    with open(path) as f:
        assert len(json.load(f)) == 100


def _fake_conv2_like():
    """Fake CUDA tensors (no GPU needed) of a grouped, padded bf16 channels_last conv: what
    torch.compile and export hold while they trace."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    with mode:
        x = torch.empty(2, 32, 9, 9, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        w = torch.empty(32, 16, 3, 3, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        b = torch.empty(32, device="cuda", dtype=torch.bfloat16)
    return mode, (x, w, b, [1, 1], [1, 1], [1, 1], 2, False)


@pytest.mark.parametrize("cached", ["cudnn", "triton"])
def test_eager_traced_and_captured_calls_run_the_cached_choice(tmp_path, monkeypatch, cached):
    """One rule for every mode: with conv_select.json naming `cached` for a shape, the op's
    traced body (what torch.compile and export run on fake tensors), the eager CUDA call and a
    call under CUDA-graph capture all run that kernel, and none of them times anything."""
    import torch

    from alexnet_cuda.ops.conv2d_relu import op

    mode, args = _fake_conv2_like()
    path = tmp_path / "conv_select.json"
    key = op.forward_key(*args)
    path.write_text(json.dumps({f"gpu|forward|{key}": {"choice": cached, "times": {}}}))
    ran = []
    real_aten = op._aten_conv2d_relu

    def triton_spy(*a):
        ran.append("triton")
        return real_aten(*a[:7])

    def aten_spy(*a):
        ran.append("cudnn")
        return real_aten(*a)

    def no_timing(fn):
        raise AssertionError("a cached shape was timed")

    monkeypatch.setattr(op, "_conv2d_relu_triton", triton_spy)
    monkeypatch.setattr(op, "_aten_conv2d_relu", aten_spy)
    monkeypatch.setattr(op, "triton_kernel_takes", lambda *a: True)
    routes = {
        "traced": lambda: torch.ops.alexnet_cuda.conv2d_relu(*args),
        "eager": lambda: op._cuda_eager(*args),
    }
    for name, call in routes.items():
        # A fresh process's selector: the choice comes from the file.
        monkeypatch.setattr(select, "SELECTOR", select.Selector(timer=no_timing, path=str(path), tag="gpu"))
        with mode:
            call()
        assert ran[-1] == cached, name
    monkeypatch.setattr(select, "SELECTOR", select.Selector(timer=no_timing, path=str(path), tag="gpu"))
    monkeypatch.setattr(select, "capturing", lambda: True)
    with mode:
        op._cuda_eager(*args)
    assert ran == [cached] * 3


def test_a_traced_first_call_times_real_stand_ins(monkeypatch):
    """A shape first seen while tracing (fake tensors) is timed on real random tensors of its
    sizes, strides and dtype, and the choice is cached for every later call."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from alexnet_cuda.ops.conv2d_relu import op

    mode = FakeTensorMode()
    with mode:
        x = torch.empty(2, 4, 6, 5).to(memory_format=torch.channels_last)
        w = torch.empty(8, 4, 3, 3)
    seen = []

    def spy(name):
        def run(input, weight, *rest):
            seen.append((name, type(input), input.shape, input.stride(), bool(input.abs().sum() > 0)))
            return name

        return run

    monkeypatch.setattr(op, "_conv2d_relu_triton", spy("triton"))
    monkeypatch.setattr(op, "_aten_conv2d_relu", spy("cudnn"))
    timer = FakeTimer({"triton": 1.0, "cudnn": 2.0})
    monkeypatch.setattr(select, "SELECTOR", select.Selector(timer=timer, tag="t"))
    args = (x, w, None, [1, 1], [0, 0], [1, 1], 1, False)
    with mode:
        assert op._forward_choice(*args) == "triton"
        assert op._forward_choice(*args) == "triton"
    assert sorted(name for name, *_ in seen) == ["cudnn", "triton"]  # timed once
    for _name, kind, shape, stride, nonzero in seen:
        assert kind is torch.Tensor and shape == x.shape and stride == x.stride() and nonzero
