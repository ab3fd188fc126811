import argparse

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mmaccel.checkpoint import CheckpointError, load_checked, read_state_dict


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_safetensors_round_trip(tmp_path):
    src, dst = _net(), nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))
    load_checked(dst, read_state_dict(path), str(path))
    for a, b in zip(src.parameters(), dst.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("wrapper", ["model", "ema", None])
def test_torch_checkpoint_unwraps_model_or_ema(tmp_path, wrapper):
    net = _net()
    sd = net.state_dict()
    obj = sd if wrapper is None else {wrapper: sd, "steps": 10, "args": argparse.Namespace(lr=1e-4)}
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    state = read_state_dict(path)
    assert set(state) == set(sd)
    assert torch.equal(state["0.weight"], sd["0.weight"])


def test_ema_preferred_over_model(tmp_path):
    a, b = _net().state_dict(), {k: v + 1 for k, v in _net().state_dict().items()}
    torch.save({"model": a, "ema": b}, tmp_path / "w.pt")
    assert torch.equal(read_state_dict(tmp_path / "w.pt")["0.bias"], b["0.bias"])


def test_ddp_prefix_stripped(tmp_path):
    sd = {"module." + k: v for k, v in _net().state_dict().items()}
    torch.save(sd, tmp_path / "w.pth")
    assert "0.weight" in read_state_dict(tmp_path / "w.pth")


def test_pickled_code_is_refused(tmp_path):
    # weights_only=True must reject arbitrary objects instead of executing their reducers.
    torch.save({"model": _net().state_dict(), "obj": torch.nn.Linear(2, 2)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="w.pt"):
        read_state_dict(tmp_path / "w.pt")


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        read_state_dict(tmp_path / "nope.safetensors")
    for name in ("bad.safetensors", "bad.pt"):
        (tmp_path / name).write_bytes(b"\x00garbage" * 10)
        with pytest.raises(CheckpointError, match=name):
            read_state_dict(tmp_path / name)


def test_non_dict_checkpoint(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt"):
        read_state_dict(tmp_path / "list.pt")


def test_shape_mismatch_names_key_and_both_shapes():
    state = nn.Linear(3, 5).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_checked(nn.Linear(3, 4), state, "other.safetensors")
    msg = str(err.value)
    assert "other.safetensors" in msg and "'weight'" in msg
    assert "(5, 3)" in msg and "(4, 3)" in msg


def test_missing_and_unexpected_keys_reported():
    net = _net()
    state = dict(net.state_dict())
    del state["2.bias"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_checked(net, state, "x")
    assert "missing key '2.bias'" in str(err.value)
    assert "unexpected key 'extra.weight'" in str(err.value)
    load_checked(net, state, "x", ignore_missing=("2.",), ignore_unexpected=("extra.",))


def test_failed_load_leaves_module_untouched():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bad = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    bad["0.weight"] = torch.zeros(9, 9)
    with pytest.raises(CheckpointError):
        load_checked(net, bad, "x")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
