"""FVD: the I3D with pytorch-i3d's ``InceptionI3d`` names loads its official state-dict layout (random weights),
refuses other architectures, and ``mmaccel eval fvd`` (i3d and the video modality's domain space) computes the
core's Fréchet distance over folders and .npz files, with clear refusals of bad sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmaccel.checkpoint import CheckpointError
from mmaccel.cli import main
from mmaccel.eval.i3d import InceptionI3d

#: A few of the official names with their shapes in pytorch-i3d's rgb_imagenet.pt / VideoGPT's i3d_pretrained_400.pt.
OFFICIAL = {
    "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
    "Conv3d_1a_7x7.bn.running_var": (64,),
    "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
    "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
    "Mixed_4b.b1b.conv3d.weight": (208, 96, 3, 3, 3),
    "Mixed_4f.b3b.bn.bias": (128,),
    "Mixed_5c.b2b.conv3d.weight": (128, 48, 3, 3, 3),
    "logits.conv3d.weight": (400, 1024, 1, 1, 1),
    "logits.conv3d.bias": (400,),
}


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """A random-weights state dict in the official layout, as old torch files store it (no BN counters)."""
    torch.manual_seed(0)
    state = {k: v for k, v in InceptionI3d().state_dict().items() if not k.endswith("num_batches_tracked")}
    for k in state:  # random BatchNorm statistics too, so that a key loaded into the wrong place would show
        if k.endswith("running_var"):
            state[k] = torch.rand_like(state[k]) + 0.5
        elif k.endswith("running_mean"):
            state[k] = torch.randn_like(state[k]) * 0.1
    path = tmp_path_factory.mktemp("i3d") / "rgb_imagenet.pt"
    torch.save(state, path)
    return path, state


def test_the_names_are_pytorch_i3ds():
    state = InceptionI3d().state_dict()
    for key, shape in OFFICIAL.items():
        assert tuple(state[key].shape) == shape, key
    # the official InceptionI3d(400)'s key count and size (checked once against pytorch_i3d.py's own module)
    assert len(state) == 344
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) == 12_711_824
    assert not [k for k in state if not k.split(".")[0].startswith(("Conv3d", "Mixed", "logits"))]


def test_an_official_state_dict_loads_from_torch_and_safetensors(official_file, tmp_path):
    from safetensors.torch import save_file

    path, state = official_file
    model = InceptionI3d.from_file(path)
    assert torch.equal(model.state_dict()["Mixed_4d.b2a.conv3d.weight"], state["Mixed_4d.b2a.conv3d.weight"])
    st = tmp_path / "i3d.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    assert torch.equal(InceptionI3d.from_file(st).logits.conv3d.bias, state["logits.conv3d.bias"])
    head = {**state, "logits.conv3d.weight": state["logits.conv3d.weight"][:157],
            "logits.conv3d.bias": state["logits.conv3d.bias"][:157]}  # a Charades head: the count is read
    torch.save(head, tmp_path / "charades.pt")
    assert InceptionI3d.from_file(tmp_path / "charades.pt").num_classes == 157


def test_another_architecture_is_refused(official_file, tmp_path):
    _, state = official_file
    flow = {**state, "Conv3d_1a_7x7.conv3d.weight": torch.zeros(64, 2, 7, 7, 7)}  # the flow stream's I3D
    torch.save(flow, tmp_path / "flow.pt")
    with pytest.raises(CheckpointError, match="Conv3d_1a_7x7.conv3d.weight"):
        InceptionI3d.from_file(tmp_path / "flow.pt")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pytorch-i3d InceptionI3d"):
        InceptionI3d.from_file(tmp_path / "other.pt")


def _clips(n, seed, t=8, size=16):
    return np.random.default_rng(seed).integers(0, 256, (n, t, size, size, 3), dtype=np.uint8)


def _npz(path, clips):
    np.savez(path, arr_0=clips)
    return str(path)


def _fvd_printed(capsys) -> float:
    out = capsys.readouterr().out
    return float(next(line for line in out.splitlines() if line.startswith("fvd:")).split()[1])


def test_fvd_i3d_of_a_set_against_itself_is_zero(official_file, tmp_path, capsys):
    real = _npz(tmp_path / "real.npz", _clips(2, 0))
    args = ["eval", "fvd", "--real", real, "--fake", real, "--features", "i3d", "--weights", str(official_file[0])]
    assert main([*args, "--json", str(tmp_path / "fvd.json")]) == 0
    assert _fvd_printed(capsys) == 0.0 and (tmp_path / "fvd.json").is_file()


def test_fvd_domain_over_folders_and_npz_is_the_cores_distance(tmp_path, capsys):
    from mmaccel.eval.fvd import frechet_video_distance, video_feature_space
    from mmaccel.eval.generative import fid_from_features
    from mmaccel.video.sampler import save_clip

    real, fake = _clips(6, 1, size=32), _clips(6, 2, size=32)
    folder = tmp_path / "real"
    folder.mkdir()
    for i, clip in enumerate(real):
        save_clip(clip, folder / f"{i:03d}.png")
    fake_npz = _npz(tmp_path / "fake.npz", fake)
    assert main(["eval", "fvd", "--real", str(folder), "--fake", _npz(tmp_path / "r.npz", real),
                 "--features", "domain"]) == 0
    assert _fvd_printed(capsys) == 0.0
    assert main(["eval", "fvd", "--real", str(folder), "--fake", fake_npz, "--features", "domain"]) == 0
    printed = _fvd_printed(capsys)
    space = video_feature_space("domain", None)
    expected = fid_from_features(space.features(real), space.features(fake))
    assert printed == pytest.approx(expected, abs=1e-4) and expected > 0
    assert frechet_video_distance(space, real, fake)["fvd"] == pytest.approx(expected, rel=1e-9)


def _refused(args, capsys, *words):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_bad_sets_and_weights_are_refused(official_file, tmp_path, capsys):
    two = _npz(tmp_path / "two.npz", _clips(2, 0))
    one = _npz(tmp_path / "one.npz", _clips(1, 0))
    small = _npz(tmp_path / "small.npz", _clips(2, 0, size=8))
    images = _npz(tmp_path / "images.npz", _clips(2, 0)[:, 0])
    fvd = ["eval", "fvd", "--features", "domain", "--json", str(tmp_path / "out.json")]
    _refused([*fvd, "--real", one, "--fake", two], capsys, "--real", "at least 2")
    _refused([*fvd, "--real", two, "--fake", small], capsys, "--fake clips are 8 frames of 8x8", "one shape")
    _refused([*fvd, "--real", two, "--fake", images], capsys, "--fake", "[N, T, H, W, 3]")
    _refused([*fvd, "--real", str(tmp_path / "nowhere"), "--fake", two], capsys, "--real", "does not exist")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "000.png").write_bytes(b"not a png")
    _refused([*fvd, "--real", str(broken), "--fake", two], capsys, "cannot read clip", "000.png")
    _refused(["eval", "fvd", "--real", two, "--fake", two, "--features", "i3d"], capsys, "--weights")
    wrong = tmp_path / "inception.pt"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, wrong)
    _refused(["eval", "fvd", "--real", two, "--fake", two, "--features", "i3d", "--weights", str(wrong)], capsys,
             "not a pytorch-i3d InceptionI3d")
    _refused(["eval", "fvd", "--real", two, "--fake", two, "--features", "clip"], capsys, "i3d", "domain")
    assert not (tmp_path / "out.json").exists()
