import pytest
import torch

from mmaccel.checkpoint import CheckpointError
from mmaccel.models.vq import VQConfig, VQModel


def _official_vq16_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of LlamaGen's VQ-16 (vq_ds16_c2i.pt), written from tokenizer/tokenizer_image/vq_model.py:
    ch=128, ch_mult=(1,1,2,2,4), num_res_blocks=2, z_channels=256, codebook 16384 x 8, GroupNorm affine,
    attention only at the last (lowest) resolution, ``codebook_used`` buffer of 65536."""
    s: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        s[f"{name}.weight"] = (cout, cin, k, k)
        s[f"{name}.bias"] = (cout,)

    def norm(name, c):
        s[f"{name}.weight"] = (c,)
        s[f"{name}.bias"] = (c,)

    def res(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for p in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{p}", c, c, 1)

    widths = [128, 128, 256, 256, 512]
    conv("encoder.conv_in", 3, 128, 3)
    cin = 128
    for i, w in enumerate(widths):
        for j in range(2):
            res(f"encoder.conv_blocks.{i}.res.{j}", cin, w)
            cin = w
            if i == 4:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", w)
        if i != 4:
            conv(f"encoder.conv_blocks.{i}.downsample.conv", w, w, 3)
    res("encoder.mid.0", 512, 512)
    attn("encoder.mid.1", 512)
    res("encoder.mid.2", 512, 512)
    norm("encoder.norm_out", 512)
    conv("encoder.conv_out", 512, 256, 3)

    conv("decoder.conv_in", 256, 512, 3)
    res("decoder.mid.0", 512, 512)
    attn("decoder.mid.1", 512)
    res("decoder.mid.2", 512, 512)
    cin = 512
    for i, w in enumerate(reversed(widths)):  # conv_blocks.0 is the lowest resolution
        for j in range(3):
            res(f"decoder.conv_blocks.{i}.res.{j}", cin, w)
            cin = w
            if i == 0:
                attn(f"decoder.conv_blocks.{i}.attn.{j}", w)
        if i != 4:
            conv(f"decoder.conv_blocks.{i}.upsample.conv", w, w, 3)
    norm("decoder.norm_out", 128)
    conv("decoder.conv_out", 128, 3, 3)

    s["quantize.embedding.weight"] = (16384, 8)
    s["quantize.codebook_used"] = (65536,)
    conv("quant_conv", 256, 8, 1)
    conv("post_quant_conv", 8, 256, 1)
    return s


def test_vq16_state_dict_matches_official_layout():
    expected = _official_vq16_shapes()
    with torch.device("meta"):
        model = VQModel(VQConfig.named("VQ-16"))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(expected) == 344
    assert sorted(got) == sorted(expected)
    for key, shape in expected.items():
        assert got[key] == shape, key
    # Spot checks straight from the released checkpoint's key list.
    assert got["encoder.conv_blocks.2.res.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert got["decoder.conv_blocks.1.res.0.nin_shortcut.weight"] == (256, 512, 1, 1)
    assert got["encoder.conv_blocks.4.attn.1.proj_out.weight"] == (512, 512, 1, 1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VQModel(VQConfig.named("VQ-tiny")).eval()


def test_round_trip_shapes_and_index_range(tiny):
    cfg = tiny.config
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    idx = tiny.encode(x)
    f = cfg.downsample
    assert idx.shape == (2, 16 // f, 16 // f) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < cfg.codebook_size
    out = tiny.decode_code(idx)
    assert out.shape == x.shape and float(out.abs().max()) <= 1.0
    # The decoder input is exactly the chosen codes: re-encoding the codes' own vectors is stable.
    assert torch.equal(tiny.decode_code(idx), out)


def test_codebook_is_l2_normalised_and_nearest(tiny):
    book = tiny.codebook()
    assert book.shape == (tiny.config.codebook_size, tiny.config.codebook_embed_dim)
    assert torch.allclose(book.norm(dim=-1), torch.ones(len(book)), atol=1e-5)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    z = torch.nn.functional.normalize(tiny.encode_latent(x).permute(0, 2, 3, 1).reshape(-1, book.shape[1]), dim=-1)
    assert torch.equal(tiny.encode(x).flatten(), (z @ book.t()).argmax(-1))  # cosine = nearest for unit vectors


def test_training_forward_has_losses_and_gradients(tiny):
    model = VQModel(tiny.config).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    rec, losses, _ = model(x)
    ((rec - x).pow(2).mean() + losses["vq"] + losses["commit"]).backward()
    assert model.encoder.conv_in.weight.grad is not None  # straight-through estimator reaches the encoder
    assert model.quantize.embedding.weight.grad is not None


def test_save_load_round_trip(tmp_path, tiny):
    tiny.save_pretrained(tmp_path)
    loaded = VQModel.from_pretrained(tmp_path)
    assert loaded.config == tiny.config
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(x), tiny.encode(x))


def test_official_style_pt_checkpoint_loads(tmp_path, tiny):
    torch.save({"model": tiny.state_dict(), "steps": 1}, tmp_path / "vq.pt")
    loaded = VQModel.from_pretrained(tmp_path / "vq.pt", config="VQ-tiny")
    assert torch.equal(loaded.codebook(), tiny.codebook())


def test_other_config_fails_naming_key_and_shapes(tmp_path, tiny):
    tiny.save_pretrained(tmp_path)
    other = VQConfig.named("VQ-tiny")
    other.codebook_size = 128
    with pytest.raises(CheckpointError) as err:
        VQModel.from_pretrained(tmp_path / "vq.safetensors", config=other)
    msg = str(err.value)
    assert "quantize.embedding.weight" in msg and "(64, 4)" in msg and "(128, 4)" in msg


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        VQModel.from_pretrained(tmp_path / "absent.safetensors", config="VQ-tiny")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        VQModel.from_pretrained(bad, config="VQ-tiny")


def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match="indices"):
        tiny.decode_code(torch.full((1, 2, 2), tiny.config.codebook_size))
    with pytest.raises(ValueError, match="images"):
        tiny.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match="unknown VQ config"):
        VQConfig.named("VQ-99")
