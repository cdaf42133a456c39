"""Corpus loading: a built-in task, a directory of splits or named files as text pairs; the hold-out
split when no validation file is given; the tokenizers trained on the training side.

Each function takes the run's config dict (keys as in ``attnseq.run.config``).
"""
from __future__ import annotations

import random
from pathlib import Path

from ..errors import ConfigError, DataError
from .datasets import DEFAULT_SEED, GENERATORS
from .io import read_aligned, read_pairs
from .tokenizers import CharTokenizer, SentencePieceTokenizer, Tokenizer, WordTokenizer


def shipped_dir(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / "data" / name


def _load_data(cfg: dict) -> dict[str, list]:
    """{"train": pairs, "valid": pairs, "test": pairs or []} from a built-in name, a directory or files."""
    data = cfg["data"]
    if data is not None:
        if data in GENERATORS:
            d = shipped_dir(data)
            if (d / "train.tsv").exists():
                return _load_split_files(d / "train.tsv", d / "valid.tsv", d / "test.tsv")
            splits = GENERATORS[data](DEFAULT_SEED)  # not shipped (a wheel install): same splits, made here
            return {k: splits[k] for k in ("train", "valid", "test")}
        d = Path(data)
        if not d.is_dir():
            raise DataError(f"--data {data}: neither a built-in dataset ({', '.join(GENERATORS)}) nor a directory")
        if not (d / "train.tsv").exists():
            raise DataError(f"--data {data}: the directory has no train.tsv (it needs train.tsv and valid.tsv)")
        return _load_split_files(d / "train.tsv", d / "valid.tsv", d / "test.tsv")
    if bool(cfg["source_lang"]) != bool(cfg["target_lang"]):
        raise ConfigError("aligned files need both --source-lang and --target-lang")
    if cfg["valid"] is None:
        return _hold_out(_read(cfg["train"], cfg["source_lang"], cfg["target_lang"]), cfg)
    return _load_split_files(cfg["train"], cfg["valid"], cfg["test"], cfg["source_lang"], cfg["target_lang"])


def _hold_out(pairs: list, cfg: dict) -> dict[str, list]:
    """No --valid: 5% of the training pairs (at most 2000), chosen with the run's seed, validate."""
    if len(pairs) < 20:
        raise DataError(f"{cfg['train']}: only {len(pairs)} pairs; give --valid FILE or more data")
    order = list(range(len(pairs)))
    random.Random(cfg["seed"]).shuffle(order)
    n = min(2000, max(1, len(pairs) // 20))
    held = set(order[:n])
    test = _read(cfg["test"], cfg["source_lang"], cfg["target_lang"]) if cfg["test"] else []
    return {"train": [p for k, p in enumerate(pairs) if k not in held],
            "valid": [pairs[k] for k in order[:n]], "test": test}


def _read(path, src_lang=None, tgt_lang=None):
    """A TSV/question_answer file, or with --source-lang/--target-lang the aligned pair PATH.SRC, PATH.TGT."""
    if src_lang and tgt_lang:
        return read_aligned(f"{path}.{src_lang}", f"{path}.{tgt_lang}")
    return read_pairs(path)


def load_data(cfg: dict) -> dict[str, list]:
    """Like ``_load_data``, with source and target swapped under ``swap_sides`` (the reverse direction)."""
    data = _load_data(cfg)
    if cfg.get("swap_sides"):
        data = {k: [(t, s) for s, t in v] for k, v in data.items()}
    return data


def _load_split_files(train, valid, test, src_lang=None, tgt_lang=None):
    out = {"train": _read(train, src_lang, tgt_lang), "valid": _read(valid, src_lang, tgt_lang)}
    if test is not None and (src_lang or Path(test).exists()):
        out["test"] = _read(test, src_lang, tgt_lang)
    else:
        out["test"] = []
    return out


def build_tokenizers(cfg: dict, pairs) -> tuple[Tokenizer, Tokenizer]:
    kind = cfg["tokenizer"] or "char"
    srcs, tgts = [s for s, _ in pairs], [t for _, t in pairs]
    if kind == "sentencepiece":
        if cfg["shared_vocab"]:
            tok = SentencePieceTokenizer.train(srcs + tgts, cfg["vocab_size"])
            return tok, tok
        return (SentencePieceTokenizer.train(srcs, cfg["vocab_size"]),
                SentencePieceTokenizer.train(tgts, cfg["vocab_size"]))
    cls = CharTokenizer if kind == "char" else WordTokenizer
    limit = None if kind == "char" else cfg["vocab_size"]
    if cfg["shared_vocab"]:
        tok = cls.build(srcs + tgts, limit)
        return tok, tok
    return cls.build(srcs, limit), cls.build(tgts, limit)
