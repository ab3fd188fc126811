"""``mmaccel eval fid``: our figures are torchmetrics' and equal scipy's Frechet distance to 1e-6; FID-Inception v3
loads a state dict with pytorch-fid's official names; every refusal exits 2 naming what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from scipy import linalg

from mmaccel.cli import main
from mmaccel.eval.generative import ImageFeatures, evaluate, fid_from_features, precision_recall
from mmaccel.eval.inception import FIDInceptionV3


def scipy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Heusel et al.'s formula as pytorch-fid computes it, in float64 with scipy's sqrtm."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_equals_scipy_on_the_same_features():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 16))
    fake = rng.normal(0.3, 1.2, size=(250, 16)) @ rng.normal(size=(16, 16)) * 0.5
    ours = fid_from_features(torch.from_numpy(real), torch.from_numpy(fake))
    assert ours == pytest.approx(scipy_fid(real, fake), abs=1e-6, rel=1e-9)
    assert fid_from_features(torch.from_numpy(real), torch.from_numpy(real)) == pytest.approx(0, abs=1e-6)


def test_the_whole_path_equals_scipy_on_a_feature_module():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    fake = (real.astype(np.int16) + rng.integers(-40, 40, real.shape)).clip(0, 255).astype(np.uint8)
    weight = torch.from_numpy(rng.normal(size=(192, 12)))
    features = lambda x: x.double().flatten(1) @ weight / 255  # noqa: E731 - a linear feature space
    record = evaluate(ImageFeatures("linear", features, lambda f: f[:, :5]), real, fake)
    flat = lambda a: (a.transpose(0, 3, 1, 2).reshape(len(a), -1) / 255) @ weight.numpy()  # noqa: E731
    assert record["fid"] == pytest.approx(scipy_fid(flat(real), flat(fake)), abs=1e-6, rel=1e-9)
    assert 0 <= record["precision"] <= 1 and 0 <= record["recall"] <= 1 and record["inception_score"] >= 1


def test_precision_recall_of_disjoint_and_equal_sets():
    a = torch.randn(50, 4)
    assert precision_recall(a, a) == (1.0, 1.0)
    assert precision_recall(a, a + 100) == (0.0, 0.0)


@pytest.fixture(scope="module")
def official_like_state_dict() -> dict[str, torch.Tensor]:
    """Random FID-Inception weights under pytorch-fid's names, without num_batches_tracked (the released .pth,
    converted from TensorFlow, has none)."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in FIDInceptionV3().state_dict().items() if "num_batches_tracked" not in k}


def test_fid_inception_has_the_official_parameter_names(official_like_state_dict):
    state = official_like_state_dict
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Conv2d_1a_3x3.bn.running_var"].shape == (32,)
    assert state["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7a.branch7x7x3_4.conv.weight"].shape == (192, 192, 3, 3)
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["fc.weight"].shape == (1008, 2048)
    # 94 BasicConv2d (conv weight, bn weight, bias, running mean and var) and fc's weight and bias
    assert len(state) == 94 * 5 + 2 and not any(k.startswith("AuxLogits") for k in state)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_fid_inception_loads_a_local_file_and_extracts_pool3(tmp_path, suffix, official_like_state_dict):
    state = official_like_state_dict
    path = tmp_path / f"pt_inception-2015-12-05{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    model = FIDInceptionV3.from_file(path)
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    if suffix == ".pth":  # one forward is enough, and costs a second at 299 x 299
        features = model.features(torch.randint(0, 256, (1, 3, 40, 40), dtype=torch.uint8))
        assert features.shape == (1, 2048) and model.logits(features).shape == (1, 1008)


def write_images(folder, n, size=16, seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_eval_fid_domain_of_a_set_against_itself_prints_zero(tmp_path, capsys):
    real = write_images(tmp_path / "real", 6)
    out = tmp_path / "fid.json"
    assert (
        main(["eval", "fid", "--real", str(real), "--fake", str(real), "--features", "domain", "--json", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "fid: 0.0000" in printed and "precision: 1.0000" in printed
    record = json.loads(out.read_text())
    assert abs(record["fid"]) < 1e-4 and record["num_real"] == 6 and "inception_score" in record


def test_eval_fid_reads_an_adm_npz(tmp_path, capsys):
    real = write_images(tmp_path / "real", 4)
    arrays = np.stack([np.asarray(Image.open(p)) for p in sorted(real.glob("*.png"))])
    np.savez(tmp_path / "fake.npz", arr_0=arrays)
    assert main(["eval", "fid", "--real", str(real), "--fake", str(tmp_path / "fake.npz"), "--features", "domain"]) == 0
    assert "fid: 0.0000" in capsys.readouterr().out


def _refused(args, capsys, *words):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_bad_inputs(tmp_path, capsys):
    real = write_images(tmp_path / "real", 3, size=16)
    small = write_images(tmp_path / "small", 3, size=8)
    one = write_images(tmp_path / "one", 1)
    broken = write_images(tmp_path / "broken", 2)
    (broken / "001.png").write_bytes(b"not a png")
    mixed = write_images(tmp_path / "mixed", 2)
    Image.new("RGB", (9, 9)).save(mixed / "002.png")
    fid = ["eval", "fid", "--features", "domain", "--json", str(tmp_path / "x.json")]
    _refused([*fid, "--real", str(small), "--fake", str(real)], capsys, "--real", "8x8", "16x16")
    _refused([*fid, "--real", str(real), "--fake", str(one)], capsys, "--fake", "at least 2")
    _refused([*fid, "--real", str(real), "--fake", str(broken)], capsys, "001.png")
    _refused([*fid, "--real", str(mixed), "--fake", str(real)], capsys, "--real", "002.png", "9x9")
    _refused([*fid, "--real", str(tmp_path / "nowhere"), "--fake", str(real)], capsys, "--real", "nowhere")
    _refused([*fid, "--real", str(real), "--fake", str(real), "--features", "clip"], capsys, "--features", "domain")
    incep = ["eval", "fid", "--real", str(real), "--fake", str(real), "--features", "inception"]
    _refused(incep, capsys, "--weights")
    from mmaccel.image.classifier import DEFAULT_WEIGHTS

    _refused([*incep, "--weights", DEFAULT_WEIGHTS], capsys, "classifier.safetensors", "FIDInceptionV3")
    _refused([*incep, "--weights", str(tmp_path / "none.pth")], capsys, "--weights", "none.pth")
    assert not (tmp_path / "x.json").exists()
