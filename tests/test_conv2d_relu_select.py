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


@pytest.mark.parametrize("triton_ms, expected", [(1.0, "triton"), (3.0, "cudnn"), (1.99, "cudnn")],
                         ids=["faster", "slower", "within_margin"])
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
    monkeypatch.setattr(select, "_can_time", lambda: False)
    assert selector.choose("dgrad", "k", _candidates()) == "cudnn"
    assert timer.calls == [] and selector.choices() == {}
    monkeypatch.setattr(select, "_can_time", lambda: True)
    assert selector.choose("dgrad", "k", _candidates()) == "triton"
    monkeypatch.setattr(select, "_can_time", lambda: False)
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
