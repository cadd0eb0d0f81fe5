"""alexnet_cuda.models.towers on its own: the TowerPair state_dict hooks, device parsing and
the TowerRunner's hand-overs, with both towers on the CPU (the CUDA streams are covered by
test_models' CUDA tests of the whole two-device model)."""

import io

import pytest
import torch
from torch import nn

from alexnet_cuda.models.towers import TowerPair, TowerRunner, parse_devices, tower_rows

CPU2 = (torch.device("cpu"), torch.device("cpu"))


def pair(rows=5, fin=3):
    torch.manual_seed(0)
    return TowerPair.split(lambda r, device: nn.Linear(fin, r, device=device), rows, CPU2)


def test_tower_rows():
    assert tower_rows(4096) == (2048, 2048)
    assert tower_rows(11) == (6, 5)  # tower 0 gets the odd row


def test_split_hands_each_tower_its_rows_and_device():
    calls = []
    TowerPair.split(lambda r, d: calls.append((r, d)) or nn.Identity(), 7, CPU2)
    assert calls == [(4, CPU2[0]), (3, CPU2[1])]


def test_state_dict_concatenates_halves():
    model = nn.Sequential(nn.Identity(), pair())
    sd = model.state_dict()
    assert list(sd) == ["1.weight", "1.bias"]
    towers = model[1].towers
    assert torch.equal(sd["1.weight"], torch.cat([towers[0].weight, towers[1].weight]))
    assert torch.equal(sd["1.bias"], torch.cat([towers[0].bias, towers[1].bias]))
    assert not any("towers" in key for key in sd._metadata)
    assert not isinstance(model.state_dict(keep_vars=True)["1.weight"], nn.Parameter)


def test_load_splits_into_the_towers_and_round_trips():
    src, dst = pair(), pair()
    torch.manual_seed(1)
    full = nn.Linear(3, 5)  # the canonical single-module layout loads too
    dst.load_state_dict(full.state_dict())
    assert torch.equal(dst.towers[0].weight, full.weight[:3])
    assert torch.equal(dst.towers[1].weight, full.weight[3:])
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst.load_state_dict(torch.load(buf))
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key
    full.load_state_dict(src.state_dict())  # and back into one module


def test_load_errors_use_canonical_names():
    model = nn.ModuleDict({"fc": pair()})
    result = model.load_state_dict({"fc.weight": torch.zeros(5, 3), "fc.extra": torch.zeros(1)}, strict=False)
    assert result.missing_keys == ["fc.bias"]
    assert result.unexpected_keys == ["fc.extra"]
    with pytest.raises(RuntimeError, match=r"size mismatch for fc.weight.*\(5, 3\)"):
        model.load_state_dict({"fc.weight": torch.zeros(4, 3), "fc.bias": torch.zeros(5)})


def test_parse_devices():
    assert parse_devices(None) is None
    assert parse_devices(["cpu", torch.device("cpu")]) == CPU2
    for bad in ("cpu", ("cpu",), ("cpu", "cpu", "cpu")):
        with pytest.raises(ValueError, match="pair of devices"):
            parse_devices(bad)


def test_runner_on_cpu_exchanges_and_gathers():
    run = TowerRunner(CPU2)
    x = torch.randn(2, 3)
    assert run.to_tower(x, 1) is x and run.move(x, 0, 1) is x
    h = [torch.randn(2, 3), torch.randn(2, 4)]
    both = torch.cat(h, dim=1)
    assert all(torch.equal(t, both) for t in run.exchange(h))
    assert torch.equal(run.gather(h), both)
