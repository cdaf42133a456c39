"""From text pairs to padded id matrices, and batches over them.

A dataset is encoded once into two right-padded matrices: ``src`` (M, Ts) and
``tgt`` (M, To) = [bos, y.., eos, pad..]. A batch takes rows and trims columns
to the longest row in it, so padding is only what the batch needs; with
bucketing, rows of similar source length go together and padding nearly vanishes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer


def pad_rows(rows: list[list[int]], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into an (M, width) int32 matrix; also return the lengths."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max(initial=1)) if width is None else width
    out = np.full((len(rows), width), PAD_ID, dtype=np.int32)
    for k, r in enumerate(rows):
        out[k, :len(r)] = r[:width]
    return out, np.minimum(lengths, width)


def encode_sources(texts, tok: Tokenizer, reverse: bool = False, max_len: int | None = None,
                   what: str = "input", first_line: int = 1) -> list[list[int]]:
    """Encode sources; empty ones become [unk]; overlong ones are truncated with a warning naming the line."""
    rows = []
    for lineno, text in enumerate(texts, first_line):
        ids = tok.encode(text) or [UNK_ID]
        if max_len is not None and len(ids) > max_len:
            warnings.warn(f"{what} line {lineno}: {len(ids)} tokens, truncated to --max-len {max_len}",
                          stacklevel=2)
            ids = ids[:max_len]
        rows.append(ids[::-1] if reverse else ids)
    return rows


@dataclass
class Encoded:
    """A dataset as id matrices. ``src_len`` counts real tokens; ``tgt_len`` includes bos and eos."""
    src: np.ndarray
    src_len: np.ndarray
    tgt: np.ndarray
    tgt_len: np.ndarray
    pairs: list = field(repr=False)
    dropped: int = 0

    def __len__(self):
        return len(self.src)


def encode_pairs(pairs, src_tok: Tokenizer, tgt_tok: Tokenizer, reverse_source: bool = False,
                 max_len: int | None = None) -> Encoded:
    """Encode (source, target) pairs; pairs with a side longer than ``max_len`` tokens are dropped."""
    srcs, tgts, kept = [], [], []
    for s, t in pairs:
        si, ti = src_tok.encode(s) or [UNK_ID], tgt_tok.encode(t)
        if max_len is not None and (len(si) > max_len or len(ti) > max_len):
            continue
        srcs.append(si[::-1] if reverse_source else si)
        tgts.append([BOS_ID] + ti + [EOS_ID])
        kept.append((s, t))
    if not kept:
        raise ValueError(f"no pair is within --max-len {max_len}")
    src, src_len = pad_rows(srcs)
    tgt, tgt_len = pad_rows(tgts)
    return Encoded(src, src_len, tgt, tgt_len, kept, dropped=len(pairs) - len(kept))


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                bucket: bool, jitter: float = 0.0, then_by: np.ndarray | None = None) -> list[np.ndarray]:
    """Row indices per batch. Bucketing sorts by length (ties by ``then_by``, e.g. target length, then
    at random), then shuffles the batches.

    ``jitter`` > 0 sorts by length plus uniform noise in [0, jitter) tokens instead, so a batch mixes
    nearby lengths: a little padding bought back as variety (lengths often track the kind of example).
    """
    M = len(lengths)
    if bucket:
        noise = rng.random(M) if rng is not None else np.arange(M) / max(M, 1)
        key = lengths + noise * jitter if jitter > 0 else lengths
        order = np.lexsort((noise, np.zeros(M) if then_by is None else then_by, key))
    else:
        order = rng.permutation(M) if rng is not None else np.arange(M)
    batches = [order[i:i + batch_size] for i in range(0, M, batch_size)]
    if rng is not None and bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def take(data: Encoded, idx: np.ndarray, pad_full: bool = False):
    """Rows ``idx`` as (src (B, Ts), tgt (B, To)), trimmed to the batch's own longest row."""
    if pad_full:
        return data.src[idx], data.tgt[idx]
    ts, to = int(data.src_len[idx].max()), int(data.tgt_len[idx].max())
    return data.src[idx, :ts], data.tgt[idx, :to]


def padding_fraction(data: Encoded, batches, pad_full: bool = False) -> float:
    """Share of source and target positions in these batches that are padding."""
    real = total = 0
    for idx in batches:
        s, t = take(data, idx, pad_full)
        real += int(data.src_len[idx].sum() + data.tgt_len[idx].sum())
        total += s.size + t.size
    return 1.0 - real / max(total, 1)
