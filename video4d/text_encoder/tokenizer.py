"""Tokenisation for the umT5 text encoder: Wan2.1's prompt cleaning, the google/umt5-xxl tokenizer
from a local folder, and the bundled word-level tokenizer of the tiny preset.

Both tokenizers are :class:`tokenizers.Tokenizer` objects (the Rust backend that transformers' fast
tokenizers wrap; for umT5 this is exactly the ``tokenizer.json`` that ``AutoTokenizer`` loads), so
ids are the same as Wan's ``HuggingfaceTokenizer`` gives: prompt tokens, then ``</s>``, truncated to
``text_len`` tokens with ``</s>`` kept.
"""
from __future__ import annotations

import html
import posixpath
import re
from importlib import resources
from typing import Optional, Sequence

import fsspec
import torch

__all__ = [
    "TokenizerNotFoundError",
    "clean_text",
    "tiny_words",
    "build_word_tokenizer",
    "load_tokenizer_folder",
    "tokenize",
    "count_tokens",
    "PAD",
    "EOS",
    "UNK",
]

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2 as in T5's vocabulary
_SPECIALS = (PAD, EOS, UNK)
TINY_WORDS = "tiny_words.txt"  # in video4d/assets/


class TokenizerNotFoundError(FileNotFoundError):
    """The tokenizer folder (or its ``tokenizer.json``) the user named does not exist."""


def clean_text(text: str, mode: str = "whitespace") -> str:
    """Wan2.1's prompt cleaning (``HuggingfaceTokenizer(clean='whitespace')``).

    ``"whitespace"``: ``ftfy.fix_text`` (only when the optional ``ftfy`` package is installed; it
    repairs mojibake and changes nothing in clean text), HTML-unescape twice, strip, then collapse
    every whitespace run to one space. ``"none"``: the text unchanged.
    """
    if mode == "none":
        return text
    if mode != "whitespace":
        raise ValueError(f"unknown text cleaning {mode!r}; use 'whitespace' or 'none'")
    try:
        import ftfy
    except ImportError:
        pass
    else:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def tiny_words(path: Optional[str] = None) -> list[str]:
    """The tiny tokenizer's words, in id order (id = 3 + position): one word per line of
    ``video4d/assets/tiny_words.txt`` (or ``path``); blank lines and ``#`` comments skipped.
    Append new words at the end so existing ids stay. Raises on duplicates or upper case."""
    if path is None:
        text = resources.files("video4d.assets").joinpath(TINY_WORDS).read_text(encoding="utf-8")
        path = f"video4d/assets/{TINY_WORDS}"
    else:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            text = f.read()
    words = [w.strip() for w in text.splitlines() if w.strip() and not w.strip().startswith("#")]
    seen: set[str] = set()
    for w in words:
        if w in seen or w in _SPECIALS:
            raise ValueError(f"word list {path} has {w!r} twice (or a special token); each word once")
        if w != w.lower() or " " in w:
            raise ValueError(f"word list {path}: {w!r} must be one lower-case word (the tokenizer lower-cases prompts)")
        seen.add(w)
    return words


def build_word_tokenizer(words: Sequence[str]):
    """A word-level :class:`tokenizers.Tokenizer`: NFKC + lower-case, split on whitespace and
    punctuation, ids ``<pad>``=0, ``</s>``=1, ``<unk>``=2 then ``words``; unknown words -> ``<unk>``;
    ``</s>`` appended. ``tokenizer.save(path)`` writes it as a ``tokenizer.json`` (usable as a
    tokenizer folder)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate([*_SPECIALS, *words])}
    if len(vocab) != len(words) + len(_SPECIALS):
        raise ValueError("build_word_tokenizer: words must be unique and must not contain special tokens")
    tokenizer = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return tokenizer


def load_tokenizer_folder(folder: str):
    """The tokenizer in ``folder/tokenizer.json`` (a local path or fsspec URL of a folder such as
    Wan2.1's ``google/umt5-xxl`` or a diffusers repo's ``tokenizer/``; a path to the json itself
    also works). Raises :class:`TokenizerNotFoundError` naming the file to provide."""
    from tokenizers import Tokenizer

    fs, path = fsspec.core.url_to_fs(folder)
    file = path if path.endswith(".json") else posixpath.join(path, "tokenizer.json")
    if not fs.exists(file):
        raise TokenizerNotFoundError(
            f"text encoder tokenizer not found: {file} (provide the google/umt5-xxl tokenizer folder with its "
            f"tokenizer.json, e.g. Wan2.1's google/umt5-xxl/ or a diffusers repo's tokenizer/; nothing is downloaded)"
        )
    with fs.open(file, "rb") as f:
        return Tokenizer.from_str(f.read().decode("utf-8"))


def tokenize(tokenizer, prompts: Sequence[str], text_len: int, clean: str = "whitespace") -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and tokenise ``prompts`` with special tokens, truncated to ``text_len`` tokens.

    Returns ``ids`` and ``mask`` ``[B, L]`` (int64; ``L`` = longest prompt in the batch, shorter
    ones padded with id 0 and mask 0). Padding to the batch maximum instead of Wan's 512 gives the
    same encoder outputs on the real tokens: padded keys are masked and the position bias is relative.
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a sequence of strings (a list, even for one prompt)")
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=text_len)
    encodings = tokenizer.encode_batch([clean_text(p, clean) for p in prompts], add_special_tokens=True)
    length = max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(prompts), length, dtype=torch.long)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        mask[i, : len(e.ids)] = 1
    return ids, mask


def count_tokens(tokenizer, prompts: Sequence[str], clean: str = "whitespace") -> list[int]:
    """Tokens of each cleaned prompt with special tokens, not truncated."""
    tokenizer.no_truncation()  # tokenize() sets its own truncation on every call
    return [len(e.ids) for e in tokenizer.encode_batch([clean_text(p, clean) for p in prompts], add_special_tokens=True)]
