"""The method layer: one typed parser, the method table, build_decoder, and a new rule needing one registration."""

import fnmatch
import re
from pathlib import Path

import pytest
import tomllib
import torch

from mmaccel import TokenPrompt
from mmaccel.acceptance import RULES, AcceptanceRule, GSDRule, LanternRule
from mmaccel.acceptance.exact import ExactRule
from mmaccel.methods import TokenTables, all_methods, build_decoder, methods_help, parse_method
from mmaccel.params import Range, coerce

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prompt():
    return TokenPrompt.from_lists([[1, 2, 3], [4, 5]])


def test_method_specs_are_typed_by_the_signature_that_takes_them():
    assert parse_method("lantern:delta=0.2:k=30") == ("lantern", {"delta": 0.2, "k": 30})
    assert parse_method("gsd:d_thr=none:group=5") == ("gsd", {"d_thr": None, "group": 5})
    assert parse_method("sjd:window=8:init=horizontal") == ("sjd", {"window": 8, "init": "horizontal"})
    assert isinstance(parse_method("lantern:delta=1")[1]["delta"], float)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("lantern:delta=abc", ["delta", "float"]),
        ("gsd:group=abc", ["group", "int"]),
        ("gsd:group=2.5", ["group", "int"]),
        ("sjd:window=big", ["window", "int"]),
        ("lantern:bogus=1", ["bogus", "delta"]),
        ("lantern:delta", ["name=value"]),
        ("warp", ["warp", "sjd"]),
        ("lantern:k=3:k=4", ["twice"]),
    ],
)
def test_bad_specs_name_the_parameter_and_its_type(spec, words):
    with pytest.raises(ValueError) as err:
        parse_method(spec)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_ranges_check_and_print_the_same_interval():
    r = Range(0, 1, low_open=True)
    assert str(r) == "(0, 1]" and 1 in r and 0.5 in r and 0 not in r and 1.01 not in r and float("nan") not in r
    with pytest.raises(ValueError, match=r"delta of rule 'lantern' must be in \(0, 1\], got 2"):
        r.check("delta", 2, "rule 'lantern'")
    assert coerce(3, float, "x", "y") == 3.0 and coerce("true", bool, "x", "y") is True
    with pytest.raises(ValueError, match="x of y takes int"):
        coerce(True, int, "x", "y")


def test_help_lists_every_method_with_its_parameter_ranges():
    text = methods_help(("random", "horizontal"))
    for name in all_methods():
        assert f"  {name}: " in text
    assert "delta: float or none in (0, 1], default 0.1" in text
    assert "p_thr: float in (0, 1], default 0.15" in text
    assert "one of random, horizontal" in text


def test_each_rule_gets_the_table_kind_it_declares(target):
    asked = []

    def provider(kind, rows):
        def table():
            asked.append(kind)
            return torch.randn(rows, 4, generator=torch.Generator().manual_seed(len(kind)))

        return table

    vocab = target.vocab_size
    tables = TokenTables({"codebook": provider("codebook", vocab), "embeddings": provider("embeddings", vocab)})
    lantern = build_decoder(target, "lantern", {"k": "5"}, tables=tables)
    gsd = build_decoder(target, "gsd", tables=tables)
    sjd = build_decoder(target, "sjd", tables=tables)
    assert isinstance(lantern.rule, LanternRule) and lantern.rule.k == 5
    assert isinstance(gsd.rule, GSDRule) and type(sjd.rule).table is None
    assert asked == ["codebook", "embeddings"]  # and nothing for SJD
    assert [RULES[n].table for n in ("lantern", "lantern++", "gsd")] == ["codebook", "codebook", "embeddings"]


def test_build_decoder_defaults_and_checks(target, small_draft):
    assert build_decoder(target, "sjd").window == 16 and build_decoder(target, "draft", draft=small_draft).window == 4
    assert build_decoder(target, "ar").drafter is None
    with pytest.raises(ValueError, match="window"):
        build_decoder(target, "sjd", {"window": 0})
    with pytest.raises(ValueError, match="needs a draft model"):
        build_decoder(target, "draft")
    with pytest.raises(ValueError, match="init of method 'sjd' must be one of"):
        build_decoder(target, "sjd", {"init": "spiral"})
    with pytest.raises(ValueError, match="guidance_scale"):
        build_decoder(target, "sjd", guidance_scale=-1)


class AlwaysAccept(ExactRule):
    """Accepts every draft (a rule written for this test)."""

    name = "always"
    lossless = False

    def accept(self, p, q, drafts, u_accept):
        return torch.ones_like(drafts, dtype=torch.bool)


def test_a_new_rule_is_a_method_once_registered(target, prompt, monkeypatch):
    # The whole of adding a rule: its class (its own file) and one entry in RULES. No other table changes.
    monkeypatch.setitem(RULES, "always", AlwaysAccept)
    assert parse_method("always:window=3") == ("always", {"window": 3})
    assert "  always: Accepts every draft" in methods_help()
    out = build_decoder(target, "always", {"window": 3}).generate(prompt, 12, seeds=[0, 1])
    assert out.tokens.shape == (2, 12) and int(out.stats.steps_per_sample.max()) <= 1 + 12 // 4 + 1


def test_out_of_vocabulary_prompt_ids_are_named(target):
    decoder = build_decoder(target, "ar")
    with pytest.raises(ValueError, match=r"prompt: token id 999 \(row 1, position 0\) is outside"):
        decoder.generate(TokenPrompt.from_lists([[1, 2], [999]]), 4)
    with pytest.raises(ValueError, match="token id -3"):
        decoder.generate(TokenPrompt.from_lists([[1, -3]]), 4)
    with pytest.raises(ValueError, match=r"token id 999 \(row 0, position 1\)"):  # padding is forwarded too
        decoder.generate(TokenPrompt(torch.tensor([[1, 999]]), torch.tensor([1])), 2)


def test_no_rule_is_special_cased_outside_acceptance():
    # A comparison with a rule's name (== "gsd", in ("lantern", ...), .startswith("lantern")) outside
    # mmaccel/acceptance/ is what a rule's own attributes (table, ranges, build) replace.
    names = "|".join(re.escape(n) for n in RULES)
    special = re.compile(rf"""(==|!=|\bin \(|startswith\(\(?)\s*["']({names})""")
    files = [p for p in (ROOT / "mmaccel").rglob("*.py") if "acceptance" not in p.parts]
    files += [*(ROOT / "image").rglob("*.py")]
    found = [
        f"{p.relative_to(ROOT)}: {line.strip()}"
        for p in files
        for line in p.read_text().splitlines()
        if special.search(line)
    ]
    assert not found, found


def test_package_data_lists_no_computed_cache():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = [g for patterns in config["tool"]["setuptools"]["package-data"].values() for g in patterns]
    assert not any(fnmatch.fnmatch("weights/lantern_k62_0123456789abcdef.safetensors", g) for g in globs)
    assert any(fnmatch.fnmatch("weights/gpt.safetensors", g) for g in globs)
    # bench image's FID is a shipped command: its metric library is a base dependency, not an extra.
    assert any(d.startswith("torchmetrics") for d in config["project"]["dependencies"])


def test_rule_base_build_refuses_a_missing_table():
    with pytest.raises(ValueError, match="needs a codebook table"):
        LanternRule.build(None)
    assert isinstance(AcceptanceRule.build.__func__(ExactRule), ExactRule)


def test_mc_sjd_builds_a_maximally_coupled_jacobi_drafter(target):
    assert build_decoder(target, "mc-sjd").drafter.coupling == "maximal"
    assert build_decoder(target, "sjd").drafter.coupling == "none"
    assert build_decoder(target, "sjd", {"coupling": "gumbel"}).drafter.coupling == "gumbel"
    assert build_decoder(target, "mc-sjd", {"coupling": "none"}).drafter.coupling == "none"
    with pytest.raises(ValueError, match="coupling of method 'sjd' takes 'none' or 'maximal' or 'gumbel'"):
        parse_method("sjd:coupling=tight")
