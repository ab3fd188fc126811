"""MeshAnything V2 on a tiny random config with the official parameter names: the AMT roles against a port of the
official stateful ``OPTLoopEmbedding``, our AR against a port of the official one-token-at-a-time generation,
greedy identity of the lossless methods at batch 2, the AMT tokeniser round trip, the Michelangelo attention
against the official einsum form, and loading / bad input."""

import json
import math

import numpy as np
import pytest
import torch
import trimesh
from transformers import DynamicCache

from mmaccel.checkpoint import CheckpointError
from mmaccel.mesh.meshanything import (
    BOS,
    EOS,
    SEPARATOR,
    MeshAnythingConfig,
    MeshAnythingPipeline,
    MeshAnythingV2,
    amt_decode,
    amt_encode,
    amt_roles,
    StripInit,
    point_cloud,
)
from mmaccel.mesh.michelangelo import MultiheadAttention, MultiheadCrossAttention

COND = 9
TINY = MeshAnythingConfig(
    decoder=dict(
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=2,
        max_position_embeddings=COND + 96,
        word_embed_proj_dim=32,
        cond_length=COND,
        init_std=0.3,  # a random decoder that writes varied tokens rather than one repeated id
    ),
    point_encoder=dict(num_latents=COND - 1, width=24, heads=2, num_encoder_layers=1, num_decoder_layers=1, embed_dim=4),
)
MESHES = [trimesh.creation.box(), trimesh.creation.icosphere(1)]


class OfficialLoopRoles:
    """A port of the official ``OPTLoopEmbedding`` state machine (MeshAnything/models/shape_opt.py), one token a
    call per sample: the reference our vectorised :func:`amt_roles` must reproduce."""

    def __init__(self, batch: int):
        self.state = [9] * batch
        self.loop = [0] * batch

    def __call__(self, ids: list[int]) -> list[int]:
        out = []
        for b, t in enumerate(ids):
            role = t
            if t in (0, 1, 2):
                self.state[b], self.loop[b] = 9, 0
            elif t == SEPARATOR:
                role, self.state[b], self.loop[b] = 3, 9, 0
            else:
                if self.state[b] == 0:
                    role = 7 + self.loop[b] % 3
                else:
                    self.state[b] -= 1
                    role = 4 + self.loop[b] % 3
                self.loop[b] += 1
            out.append(role)
        return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_meshanything")
    MeshAnythingV2(TINY).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(folder):
    return MeshAnythingPipeline.from_pretrained(folder)


def test_amt_roles_match_the_official_recurrence():
    g = torch.Generator().manual_seed(1)
    # Mostly coordinates, with separators and special tokens mixed in, so every branch of the recurrence runs.
    tokens = torch.randint(3, 131, (4, 80), generator=g)
    kinds = torch.rand(4, 80, generator=g)
    tokens = torch.where(kinds < 0.08, SEPARATOR, torch.where(kinds < 0.11, torch.randint(0, 3, (4, 80), generator=g), tokens))
    official = OfficialLoopRoles(4)
    expected = torch.tensor([official(tokens[:, i].tolist()) for i in range(80)]).T
    history = torch.cat([torch.full((4, COND), 2), tokens], 1)
    assert torch.equal(amt_roles(history, COND)[:, COND:], expected)
    assert set(expected.unique().tolist()) == set(range(10))


def test_ar_matches_the_official_token_by_token_generation(pipe):
    steps = 40
    ours = pipe(MESHES, method="ar", max_new_tokens=steps, temperature=0.0, progress=False).tokens
    # The official loop: the prefix as inputs_embeds, then one token a forward with the stateful roles.
    decoder = pipe.lm.decoder
    embeds = pipe.prompt(MESHES).embeddings
    cache = DynamicCache()
    out = decoder(inputs_embeds=embeds, cache=cache, use_cache=True)
    roles = OfficialLoopRoles(2)
    token = out.logits[:, -1].argmax(-1)
    reference = [token]
    for _ in range(steps - 1):
        face_ids = torch.tensor(roles(token.tolist()))[:, None]
        out = decoder(input_ids=token[:, None], face_ids=face_ids, cache=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1)
        reference.append(token)
    reference = torch.stack(reference, 1)
    assert torch.equal(ours, reference)
    assert not torch.equal(ours[0], ours[1])  # the two point clouds condition different meshes


def test_a_forwarded_window_gets_the_official_roles_through_separators_and_specials(pipe):
    # Teacher forced through every role: our one forward of a whole window (roles from the cache's history)
    # against the official one token a forward with the stateful recurrence.
    lm, decoder = pipe.lm, pipe.lm.decoder
    strip = amt_encode(trimesh.creation.box())[:40]
    tokens = torch.tensor([[BOS, *strip.tolist()], [BOS, *strip[::-1].tolist()]])
    prompt = pipe.prompt(MESHES)
    cache = lm.new_cache(2, COND + 64)
    lm.prefill(prompt, cache)
    positions = COND + torch.arange(tokens.shape[1]).expand(2, -1)
    ours = lm.forward(tokens, positions, cache).logits
    official_cache, roles, reference = DynamicCache(), OfficialLoopRoles(2), []
    decoder(inputs_embeds=prompt.embeddings, cache=official_cache, use_cache=True)
    for i in range(tokens.shape[1]):
        face_ids = torch.tensor(roles(tokens[:, i].tolist()))[:, None]
        out = decoder(input_ids=tokens[:, i : i + 1], face_ids=face_ids, cache=official_cache, use_cache=True)
        reference.append(out.logits[:, -1])
    torch.testing.assert_close(ours, torch.stack(reference, 1), atol=1e-4, rtol=1e-4)
    assert (tokens == SEPARATOR).any()


@pytest.mark.parametrize(
    "spec", ["sjd", "sjd:window=4", "sjd:init=strip", "mc-sjd", "mc-sjd-tree", "mc-sjd:init=strip", "sjd:window=auto"]
)
def test_greedy_lossless_methods_match_ar_at_batch_2(pipe, spec):
    ar = pipe(MESHES, method="ar", max_new_tokens=48, temperature=0.0, progress=False)
    out = pipe(MESHES, method=spec, max_new_tokens=48, temperature=0.0, progress=False)
    assert torch.equal(out.tokens, ar.tokens)
    assert all(s["steps"] <= a["steps"] for s, a in zip(out.stats, ar.stats))


def test_sampling_with_the_official_top_k_top_p_runs_every_row(pipe):
    # Sampling runs end to end with the official top-k / top-p defaults (the chi-square tests of the core cover
    # the rule's losslessness); each row's stats count its own forwards.
    out = pipe(MESHES, method="sjd", max_new_tokens=24, progress=False)
    assert out.tokens.shape == (2, 24)
    assert all(1 <= s["steps"] <= 24 for s in out.stats)


@pytest.mark.parametrize(
    "mesh",
    [trimesh.creation.box(), trimesh.creation.icosphere(1), trimesh.creation.torus(1, 0.3, 8, 6)],
    ids=["box", "sphere", "torus"],
)
def test_amt_round_trip_keeps_a_closed_mesh_closed(mesh):
    tokens = amt_encode(mesh)
    assert len(tokens) < 9 * len(mesh.faces)  # the adjacent tokenisation shares vertices along strips
    decoded, report = amt_decode(np.r_[BOS, tokens, EOS])
    assert report.ended and report.valid and report.faces_kept == len(mesh.faces)
    assert not report.errors


def test_amt_decode_stops_at_a_malformed_separator_and_never_raises():
    strip = amt_encode(trimesh.creation.box())
    first = strip[: int(np.flatnonzero(strip == SEPARATOR)[0])]  # the first strip alone
    mesh, report = amt_decode(np.r_[first, SEPARATOR, 5, 6, 7, 8, SEPARATOR, first])
    assert report.errors and report.faces_kept == len(first) // 3 - 2
    for garbage in ([], [EOS], [SEPARATOR, SEPARATOR], [5, 6]):
        mesh, report = amt_decode(np.asarray(garbage))
        assert len(mesh.faces) == 0 and not report.valid


@pytest.mark.parametrize("cls", [MultiheadAttention, MultiheadCrossAttention])
def test_michelangelo_attention_matches_the_official_einsum_form(cls):
    torch.manual_seed(2)
    heads, width = 3, 24
    layer = cls(width, heads, qkv_bias=False)
    x, data = torch.randn(2, 5, width), torch.randn(2, 7, width)
    ours = layer(x) if cls is MultiheadAttention else layer(x, data)
    # The official QKVMultiheadAttention / QKVMultiheadCrossAttention.
    if cls is MultiheadAttention:
        qkv = layer.c_qkv(x).view(2, 5, heads, -1)
        ch = qkv.shape[-1] // 3
        q, k, v = torch.split(qkv, ch, dim=-1)
    else:
        q = layer.c_q(x).view(2, 5, heads, -1)
        kv = layer.c_kv(data).view(2, 7, heads, -1)
        ch = kv.shape[-1] // 2
        k, v = torch.split(kv, ch, dim=-1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bthc,bshc->bhts", q * scale, k * scale), dim=-1)
    reference = layer.c_proj(torch.einsum("bhts,bshc->bthc", weight, v).reshape(2, 5, -1))
    torch.testing.assert_close(ours, reference)


def test_point_cloud_is_normalised_like_the_official_dataset():
    pc = point_cloud(trimesh.creation.box((2.0, 1.0, 0.5)), points=512, seed=3)
    assert pc.shape == (512, 6)
    assert np.isclose(np.abs(pc[:, :3]).max(), 0.9995)
    np.testing.assert_allclose(np.linalg.norm(pc[:, 3:], axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="no faces"):
        point_cloud(trimesh.Trimesh())


def test_the_released_layout_uses_the_official_names():
    names = set(MeshAnythingV2(TINY).state_dict())
    for name in (
        "point_encoder.model.shape_projection",
        "point_encoder.model.shape_model.encoder.query",
        "point_encoder.model.shape_model.encoder.cross_attn.attn.c_kv.weight",
        "point_encoder.model.shape_model.encoder.self_attn.resblocks.0.attn.c_qkv.weight",
        "point_encoder.model.shape_model.pre_kl.weight",
        "point_encoder.model.shape_model.transformer.resblocks.0.mlp.c_fc.weight",
        "point_encoder.model.shape_model.geo_decoder.output_proj.weight",
        "transformer.model.decoder.token_embed_positions.weight",
        "transformer.model.decoder.cond_embed.weight",
        "transformer.model.decoder.embed_positions.weight",
        "transformer.model.decoder.layers.1.self_attn.q_proj.weight",
        "cond_head_proj.weight",
        "cond_proj.weight",
    ):
        assert name in names, name
    assert not any("c_qkv.bias" in n or "c_q.bias" in n for n in names)  # qkv_bias: false, as in shapevae-256


def test_official_defaults_describe_the_released_sizes():
    config = MeshAnythingConfig()
    decoder, encoder = config.decoder_config(), config.encoder_config()
    assert (decoder.hidden_size, decoder.num_hidden_layers, decoder.vocab_size) == (1024, 24, 132)
    assert decoder.max_position_embeddings == 10340 and not decoder.do_layer_norm_before
    assert (encoder.width, encoder.num_latents, encoder.num_encoder_layers, encoder.num_decoder_layers) == (768, 256, 8, 16)


def test_loading_refuses_missing_and_mismatched_folders(folder, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        MeshAnythingPipeline.from_pretrained(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        MeshAnythingPipeline.from_pretrained(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["decoder"]["hidden_size"] = 48
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        MeshAnythingPipeline.from_pretrained(other)
    (other / "config.json").write_text(json.dumps({"decoder": {"hidden_sise": 48}}))
    with pytest.raises(ValueError, match="hidden_sise"):
        MeshAnythingPipeline.from_pretrained(other)


def test_pipeline_refuses_a_token_budget_past_the_context(pipe):
    with pytest.raises(ValueError, match="max_new_tokens"):
        pipe(MESHES, max_new_tokens=1000, progress=False)


def test_cli_family_meshanything_writes_mesh_render_and_stats(folder, tmp_path, capsys):
    from mmaccel.cli import main

    source = tmp_path / "box.obj"
    trimesh.creation.box().export(source)
    out = tmp_path / "out" / "remesh.obj"
    out.parent.mkdir()
    argv = ["generate", "mesh", "--family", "meshanything", "--model", str(folder), "--condition", str(source)]
    code = main([*argv, "--max-new-tokens", "30", "--temperature", "0", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    stats = json.loads((out.parent / "remesh.json").read_text())
    assert stats["family"] == "meshanything" and stats["method"] == "sjd" and stats["tokens"] == 30
    assert stats["condition"] == str(source)
    names = {p.name for p in out.parent.iterdir()}
    assert {"remesh.json", "remesh.png"} <= names and ("remesh.obj" in names) == bool(stats["faces"])


@pytest.mark.parametrize(
    "extra, words",
    [
        ([], ["--condition"]),
        (["--condition", "MISSING"], ["--condition", "missing.obj"]),
        (["--condition", "GARBAGE"], ["--condition"]),
        (["--condition", "EMPTY"], ["--condition", "no faces"]),
        (["--condition", "BOX", "--prompt", "a cube"], ["--prompt"]),
        (["--condition", "BOX", "--class", "cone"], ["--class"]),
        (["--condition", "BOX", "--max-new-tokens", "5000"], ["--max-new-tokens"]),
        (["--condition", "BOX", "--method", "xspec"], ["xspec"]),
    ],
)
def test_cli_family_meshanything_refuses_bad_input_and_writes_nothing(folder, tmp_path, capsys, extra, words):
    from mmaccel.cli import main

    files = tmp_path / "in"
    files.mkdir()
    trimesh.creation.box().export(files / "box.obj")
    (files / "garbage.obj").write_text("this is not a mesh\n")
    (files / "empty.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    names = {"BOX": files / "box.obj", "GARBAGE": files / "garbage.obj", "EMPTY": files / "empty.ply"}
    names["MISSING"] = files / "missing.obj"
    extra = [str(names.get(x, x)) for x in extra]
    out = tmp_path / "out"
    out.mkdir()
    code = main(
        ["generate", "mesh", "--family", "meshanything", "--model", str(folder), *extra, "--out", str(out / "x.obj")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mmaccel: error: ") and all(w in err for w in words), err
    assert list(out.iterdir()) == []


def test_strip_init_copies_one_vertex_back():
    context = torch.tensor([[10, 11, 12, 20, 21, 22, 0, 0, 0, 0]])
    index = torch.tensor([[6, 7, 8, 9]])
    out = StripInit()(context, index, torch.zeros(1, 4))
    assert out.tolist() == [[20, 21, 22, 20]]  # position 9 follows the copy past the window's start
    fresh = StripInit()(context, torch.tensor([[0, 1]]), torch.tensor([[0.0, 0.999]]))
    assert fresh.tolist() == [[3, 130]]  # nothing 3 back: uniform coordinate tokens


def test_bench_family_meshanything_greedy_is_lossless(folder, tmp_path, capsys):
    from mmaccel.cli import main

    out = tmp_path / "bench.json"
    argv = ["bench", "mesh", "--family", "meshanything", "--model", str(folder), "--num-meshes", "2"]
    argv += ["--batch-sizes", "1,2", "--max-new-tokens", "24", "--temperature", "0", "--json", str(out)]
    code = main([*argv, "--methods", "ar,sjd,sjd:init=strip,mc-sjd-tree"])
    assert code == 0, capsys.readouterr().err
    records = json.loads(out.read_text())
    assert {(r["method"], r["batch_size"]) for r in records} == {
        (m, b) for m in ("ar", "sjd", "sjd:init=strip", "mc-sjd-tree") for b in (1, 2)
    }
    assert all(r["matches_ar"] == 1.0 and r["num_meshes"] == 2 and r["step_compression"] >= 1.0 for r in records)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--methods", "ar,xspec"], ["xspec"]),
        (["--max-new-tokens", "5000"], ["--max-new-tokens"]),
        (["--guidance-scale", "2"], ["--guidance-scale"]),
    ],
)
def test_bench_family_meshanything_refuses_bad_input(folder, tmp_path, capsys, extra, words):
    from mmaccel.cli import main

    out = tmp_path / "bench.json"
    code = main(["bench", "mesh", "--family", "meshanything", "--model", str(folder), *extra, "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words), err
    assert not out.exists()
