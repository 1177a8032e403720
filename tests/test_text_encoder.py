"""The umT5 text encoder against an independent re-implementation of Wan2.1's T5 encoder math.

The reference below is written from the math of Wan2.1's ``wan/modules/t5.py`` (T5Encoder with
``shared_pos=False``): token embedding; per layer a T5 RMS norm, multi-head self-attention without
1/sqrt(d) scaling plus that layer's relative-position bias (bidirectional log buckets), residual,
RMS norm, gated-GELU FFN (tanh GELU on the gate, times the linear branch), residual; final RMS norm.
Weights are random, saved in Wan's key layout (``.pth``) and in the transformers/diffusers layout
(sharded safetensors with an index), with a tokenizer the test builds.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel

from fourd.weights import StateDictMismatchError, WeightsNotFoundError, write_safetensors
from video4d import load_text_encoder
from video4d.text_encoder import WAN_NEGATIVE_PROMPT, TextEncoderConfig, TokenizerNotFoundError, clean_text

WORDS = "the a red green blue sphere cube cone moves rotates spins left right slowly quickly camera static orbits and".split()
CFG = TextEncoderConfig(vocab_size=40, dim=16, dim_attn=24, ffn_dim=20, num_heads=3, num_layers=2, num_buckets=8,
                        max_distance=24, text_len=32)
PROMPTS = [
    "a red sphere rotates left",
    "the  blue cube moves\n right quickly and a green cone spins slowly, camera static",
    "",
    " ".join(WORDS * 2),  # 40 words: truncated to text_len
]


# ------------------------------------------------------------------ the test's tokenizer and weights
def make_tokenizer_folder(path) -> Tokenizer:
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    return tok


def official_state(cfg: TextEncoderConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under Wan2.1's key names (T5Encoder, shared_pos=False)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.3: torch.randn(*shape, generator=g) * s  # noqa: E731
    d, a, f, h = cfg.dim, cfg.dim_attn, cfg.ffn_dim, cfg.num_heads
    state = {"token_embedding.weight": r(cfg.vocab_size, d, s=1.0)}
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        state.update({
            p + "norm1.weight": 1 + r(d, s=0.1), p + "attn.q.weight": r(a, d), p + "attn.k.weight": r(a, d),
            p + "attn.v.weight": r(a, d), p + "attn.o.weight": r(d, a), p + "norm2.weight": 1 + r(d, s=0.1),
            p + "ffn.gate.0.weight": r(f, d), p + "ffn.fc1.weight": r(f, d), p + "ffn.fc2.weight": r(d, f),
            p + "pos_embedding.embedding.weight": r(cfg.num_buckets, h, s=1.0),
        })
    state["norm.weight"] = 1 + r(d, s=0.1)
    return state


def hf_state(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under transformers' UMT5EncoderModel names (this test's own table)."""
    names = {"norm1": "layer.0.layer_norm", "attn.q": "layer.0.SelfAttention.q", "attn.k": "layer.0.SelfAttention.k",
             "attn.v": "layer.0.SelfAttention.v", "attn.o": "layer.0.SelfAttention.o",
             "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias", "norm2": "layer.1.layer_norm",
             "ffn.gate.0": "layer.1.DenseReluDense.wi_0", "ffn.fc1": "layer.1.DenseReluDense.wi_1",
             "ffn.fc2": "layer.1.DenseReluDense.wo"}
    out = {"shared.weight": official["token_embedding.weight"], "encoder.embed_tokens.weight": official["token_embedding.weight"],
           "encoder.final_layer_norm.weight": official["norm.weight"]}
    for key, value in official.items():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            out[f"encoder.block.{i}.{names[rest.removesuffix('.weight')]}.weight"] = value
    return out


# ------------------------------------------------------------------ reference math
def ref_bucket(rel: int, num_buckets: int, max_dist: int) -> int:
    """T5 bidirectional bucket of key position minus query position."""
    half = num_buckets // 2
    bucket = half if rel > 0 else 0
    n = abs(rel)
    exact = half // 2
    if n < exact:
        return bucket + n
    large = exact + int(math.log(n / exact) / math.log(max_dist / exact) * (half - exact))
    return bucket + min(large, half - 1)


def rms(x, w, eps=1e-6):
    return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def ref_encode(W: dict[str, torch.Tensor], cfg: TextEncoderConfig, ids: list[int]) -> torch.Tensor:
    """Wan's encoder on one prompt padded to text_len with a mask, trimmed back to its tokens."""
    n, L, H = len(ids), cfg.text_len, cfg.num_heads
    tokens = torch.tensor(ids + [0] * (L - n))
    valid = torch.arange(L) < n
    buckets = torch.tensor([[ref_bucket(k - q, cfg.num_buckets, cfg.max_distance) for k in range(L)] for q in range(L)])
    x = W["token_embedding.weight"][tokens]  # [L, D]
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        h = rms(x, W[p + "norm1.weight"])
        q, k, v = ((h @ W[p + f"attn.{c}.weight"].T).view(L, H, -1).transpose(0, 1) for c in "qkv")
        logits = q @ k.transpose(1, 2)  # [H, Lq, Lk], no scaling
        logits = logits + W[p + "pos_embedding.embedding.weight"][buckets].permute(2, 0, 1)
        logits = logits.masked_fill(~valid[None, None, :], float("-inf"))
        attn = (logits.softmax(-1) @ v).transpose(0, 1).reshape(L, -1)
        x = x + attn @ W[p + "attn.o.weight"].T
        h = rms(x, W[p + "norm2.weight"])
        g = h @ W[p + "ffn.gate.0.weight"].T
        g = 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))
        x = x + (g * (h @ W[p + "ffn.fc1.weight"].T)) @ W[p + "ffn.fc2.weight"].T
    return rms(x, W["norm.weight"])[:n]


def ref_ids(tok: Tokenizer, prompt: str, text_len: int) -> list[int]:
    words = tok.encode(" ".join(prompt.split()), add_special_tokens=False).ids
    return words[: text_len - 1] + [1]  # Wan's truncation keeps </s>


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("umt5")
    tok = make_tokenizer_folder(root / "tokenizer")
    W = official_state(CFG)
    torch.save(W, root / "models_t5_umt5-enc.pth")
    hf = hf_state(W)
    (root / "text_encoder").mkdir()
    keys = sorted(hf)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in shards.items():
        write_safetensors(str(root / "text_encoder" / name), {k: hf[k] for k in part if k != "encoder.embed_tokens.weight"})
    index = {"metadata": {}, "weight_map": {k: n for n, part in shards.items() for k in part if k != "encoder.embed_tokens.weight"}}
    (root / "text_encoder" / "model.safetensors.index.json").write_text(json.dumps(index))
    return root, tok, W


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_encode_equals_wan_reference(files, layout):
    root, tok, W = files
    weights = root / ("models_t5_umt5-enc.pth" if layout == "official" else "text_encoder")
    encoder = load_text_encoder(CFG, weights=str(weights), tokenizer=str(root / "tokenizer"))
    out = encoder.encode(PROMPTS)
    for prompt, got in zip(PROMPTS, out):
        ids = ref_ids(tok, prompt, CFG.text_len)
        want = ref_encode(W, CFG, ids)
        assert got.shape == (len(ids), CFG.dim)  # trimmed to the real token count, </s> included
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert [o.shape[0] for o in out] == [6, 16, 1, CFG.text_len]


def test_batch_does_not_change_results(files):
    root, _, _ = files
    encoder = load_text_encoder(CFG, weights=str(root / "models_t5_umt5-enc.pth"), tokenizer=str(root / "tokenizer"))
    alone = encoder.encode([PROMPTS[0]])[0]
    torch.testing.assert_close(encoder.encode(PROMPTS)[0], alone, atol=1e-6, rtol=1e-6)


def test_negative_prompt_is_encoded_not_zeros(files):
    root, _, _ = files
    encoder = load_text_encoder(CFG, weights=str(root / "models_t5_umt5-enc.pth"), tokenizer=str(root / "tokenizer"))
    empty = encoder.encode_negative("")
    assert empty.shape == (1, CFG.dim) and empty.abs().sum() > 0
    torch.testing.assert_close(encoder.encode_negative(), encoder.encode([WAN_NEGATIVE_PROMPT])[0])


def test_missing_files_raise_clear_errors(files, tmp_path):
    root, _, W = files
    with pytest.raises(TokenizerNotFoundError, match="tokenizer.json"):
        load_text_encoder(CFG, weights=str(root / "models_t5_umt5-enc.pth"), tokenizer=str(tmp_path / "nothing"))
    ids_only = load_text_encoder(CFG, weights=str(root / "models_t5_umt5-enc.pth"))  # no tokenizer: ids only
    assert ids_only(torch.tensor([[5, 6, 1]]), torch.ones(1, 3, dtype=torch.long)).shape == (1, 3, CFG.dim)
    with pytest.raises(TokenizerNotFoundError, match=r"without a tokenizer.*tokenizer=<folder with tokenizer\.json>"):
        ids_only.encode(["a prompt"])
    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        load_text_encoder(CFG, weights=str(tmp_path / "missing.pth"), tokenizer=str(root / "tokenizer"))
    broken = {k: v for k, v in W.items() if k != "blocks.1.ffn.fc1.weight"}
    broken["blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(StateDictMismatchError, match=r"encoder\.block\.1\.layer\.1\.DenseReluDense\.wi_1\.weight[\s\S]*blocks\.0\.extra"):
        load_text_encoder(CFG, weights=broken, tokenizer=str(root / "tokenizer"))


def test_umt5_xxl_meta_build_has_wan_keys():
    """Wan2.1's models_t5_umt5-xxl-enc-bf16.pth: token_embedding, 24 x (norm1, attn.{q,k,v,o},
    norm2, ffn.{gate.0,fc1,fc2}, pos_embedding.embedding), norm; loaded as-is on meta."""
    D, F, H, V, B = 4096, 10240, 64, 256384, 32
    block = {"norm1.weight": (D,), "attn.q.weight": (D, D), "attn.k.weight": (D, D), "attn.v.weight": (D, D),
             "attn.o.weight": (D, D), "norm2.weight": (D,), "ffn.gate.0.weight": (F, D), "ffn.fc1.weight": (F, D),
             "ffn.fc2.weight": (D, F), "pos_embedding.embedding.weight": (B, H)}
    table = {"token_embedding.weight": (V, D), "norm.weight": (D,)}
    table.update({f"blocks.{i}.{k}": s for i in range(24) for k, s in block.items()})
    assert len(table) == 242
    model = load_text_encoder("umt5-xxl", device="meta")
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(math.prod(s) for s in table.values())
    on_meta = {k: torch.empty(s, device="meta") for k, s in table.items()}
    loaded = load_text_encoder("umt5-xxl", weights=on_meta, device="meta")  # strict key and shape check
    assert len(loaded.state_dict()) == 242
    with pytest.raises(StateDictMismatchError, match=r"missing keys \(242\)[\s\S]*unexpected keys \(1\): x"):
        load_text_encoder("umt5-xxl", weights={"x": torch.empty(1, device="meta")}, device="meta")


def test_tiny_preset_is_seeded_and_leaves_global_rng_alone():
    from video4d.model.config import PRESETS as DIT_PRESETS

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = load_text_encoder("tiny")
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)
    b = load_text_encoder("tiny")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k
    prompts = ["a red sphere orbits left while the camera is static", "a blue cube spins quickly, camera orbiting", "xyzzy"]
    out = a.encode(prompts)
    assert [o.shape for o in out] == [(11, 32), (9, 32), (2, 32)]
    assert out[0].shape[1] == DIT_PRESETS["tiny"].text_dim
    ids = a.tokenizer.encode("xyzzy sphere").ids
    assert ids[0] == a.tokenizer.token_to_id("<unk>") and ids[-1] == a.tokenizer.token_to_id("</s>")


def test_clean_text_is_wans_whitespace_cleaning():
    assert clean_text("  a &amp;amp; b\n\t c  ") == "a & b c"
    assert clean_text("x  y", "none") == "x  y"


def test_config_group_yaml_keys_are_loader_arguments(tmp_path):
    import inspect
    from pathlib import Path

    from omegaconf import OmegaConf

    from video4d.text_context import load_context, save_context

    root = Path(__file__).resolve().parents[1] / "configs" / "text_encoder"
    params = set(inspect.signature(load_text_encoder).parameters) - {"device"}
    for name in ("tiny", "umt5-xxl"):
        assert set(OmegaConf.load(root / f"{name}.yaml")) == params, name
    encoder = load_text_encoder(**OmegaConf.to_container(OmegaConf.load(root / "tiny.yaml")))
    (context,) = encoder.encode(["a green cone bounces"])
    save_context(str(tmp_path / "c.safetensors"), context)  # precomputed files keep working
    assert torch.equal(load_context(str(tmp_path / "c.safetensors"), text_dim=32), context)
