"""From text pairs to padded id matrices, and batches over them.

A dataset is encoded once into two right-padded matrices: ``src`` (M, Ts) and
``tgt`` (M, To) = [bos, y.., eos, pad..]. A batch takes rows and trims columns
to the longest row in it, so padding is only what the batch needs; with
bucketing, rows of similar source length go together and padding nearly vanishes.
"""
from __future__ import annotations

import warnings
from array import array
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
                 max_len: int | None = None, keep_pairs: bool = True, compact: bool = False) -> Encoded:
    """Encode (source, target) pairs; pairs with a side longer than ``max_len`` tokens are dropped.

    Ids go into one flat array per side (4 bytes an id, not a Python list of ints each), then into the
    padded matrices. ``keep_pairs`` False leaves ``Encoded.pairs`` empty: a training set's text is not
    needed once encoded. ``compact`` stores the matrices as uint16 where both vocabularies fit;
    ``take`` gives int32 batches either way.
    """
    src_ids, tgt_ids, src_len, tgt_len, kept = array("i"), array("i"), array("q"), array("q"), []
    for s, t in pairs:
        si, ti = src_tok.encode(s) or [UNK_ID], tgt_tok.encode(t)
        if max_len is not None and (len(si) > max_len or len(ti) > max_len):
            continue
        src_ids.extend(si[::-1] if reverse_source else si)
        tgt_ids.append(BOS_ID)
        tgt_ids.extend(ti)
        tgt_ids.append(EOS_ID)
        src_len.append(len(si))
        tgt_len.append(len(ti) + 2)
        if keep_pairs:
            kept.append((s, t))
    if not src_len:
        raise ValueError(f"no pair is within --max-len {max_len}")
    small = compact and max(src_tok.vocab_size, tgt_tok.vocab_size) <= np.iinfo(np.uint16).max + 1
    dtype = np.uint16 if small else np.int32
    src_len, tgt_len = np.array(src_len, dtype=np.int64), np.array(tgt_len, dtype=np.int64)
    src = _pad_flat(np.frombuffer(src_ids, dtype=np.int32), src_len, dtype)
    tgt = _pad_flat(np.frombuffer(tgt_ids, dtype=np.int32), tgt_len, dtype)
    return Encoded(src, src_len, tgt, tgt_len, kept, dropped=len(pairs) - len(src_len))


def _pad_flat(ids: np.ndarray, lengths: np.ndarray, dtype) -> np.ndarray:
    """Rows given as their ids one after another (``ids``) and their ``lengths`` -> an (M, longest)
    matrix, right-padded."""
    width = int(lengths.max(initial=1))
    out = np.full((len(lengths), width), PAD_ID, dtype=dtype)
    out[np.arange(width) < lengths[:, None]] = ids          # row-major: row k's first lengths[k] cells
    return out


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
    """Rows ``idx`` as int32 (src (B, Ts), tgt (B, To)), trimmed to the batch's own longest row."""
    if pad_full:
        src, tgt = data.src[idx], data.tgt[idx]
    else:
        ts, to = int(data.src_len[idx].max()), int(data.tgt_len[idx].max())
        src, tgt = data.src[idx, :ts], data.tgt[idx, :to]
    if src.dtype != np.int32:                               # compact (uint16) storage
        src, tgt = src.astype(np.int32), tgt.astype(np.int32)
    return src, tgt


def padding_fraction(data: Encoded, batches, pad_full: bool = False) -> float:
    """Share of source and target positions in these batches that are padding."""
    real = total = 0
    for idx in batches:                                     # the widths ``take`` gives, without copying rows
        sl, tl = data.src_len[idx], data.tgt_len[idx]
        width = data.src.shape[1] + data.tgt.shape[1] if pad_full else int(sl.max()) + int(tl.max())
        real += int(sl.sum() + tl.sum())
        total += len(idx) * width
    return 1.0 - real / max(total, 1)
