"""``AttentionSeq2seq``: the encoder and the attention decoder, with a loss."""
from __future__ import annotations

import numpy as np

from .backend import get_array_module
from .checks import check_ids, check_mask
from .decoders import AttentionDecoder
from .encoders import Encoder
from .layers import INIT_SCHEMES, SoftmaxCrossEntropy
from .module import Module
from ..data.tokenizers import BOS_ID, EOS_ID, PAD_ID


class AttentionSeq2seq(Module):
    """Encoder + AttentionDecoder + masked softmax cross-entropy.

    Batches are token-id arrays, right-padded with ``pad_id``:
    ``src`` (N, Ts) and ``tgt`` (N, To + 1) = [bos, y_1 .. y_k, eos, pad ..].
    The decoder reads ``tgt[:, :-1]`` and is scored against ``tgt[:, 1:]``.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, wordvec_size: int = 16,
                 hidden_size: int = 256, *, dropout: float = 0.0, init: str = "xavier",
                 dtype="float32", seed: int = 0, pad_id: int = PAD_ID, bos_id: int = BOS_ID,
                 eos_id: int = EOS_ID):
        super().__init__()
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}")
        for name, v in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size),
                        ("wordvec_size", wordvec_size), ("hidden_size", hidden_size)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        rng = np.random.default_rng(seed)
        kw = dict(rng=rng, init=init, dtype=dtype, dropout=dropout)
        self.add_module("encoder", Encoder(src_vocab_size, wordvec_size, hidden_size, **kw))
        self.add_module("decoder", AttentionDecoder(tgt_vocab_size, wordvec_size, hidden_size, **kw))
        self.add_module("loss_layer", SoftmaxCrossEntropy(ignore_index=pad_id))
        self.config = dict(src_vocab_size=int(src_vocab_size), tgt_vocab_size=int(tgt_vocab_size),
                           wordvec_size=int(wordvec_size), hidden_size=int(hidden_size),
                           dropout=float(dropout), init=init, dtype=dtype.name, seed=int(seed),
                           pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    @classmethod
    def from_config(cls, config: dict) -> "AttentionSeq2seq":
        c = dict(config)
        return cls(c.pop("src_vocab_size"), c.pop("tgt_vocab_size"), c.pop("wordvec_size"),
                   c.pop("hidden_size"), **c)

    # -- encoding ---------------------------------------------------------------
    def _prepare_src(self, src):
        """Check ids, derive mask and lengths on the host, move them to the model's device."""
        xp = self.xp
        check_ids("src", src, self.config["src_vocab_size"])
        mask = check_mask("src (padding mask)", src != self.pad_id)
        lengths = mask.sum(axis=1)
        full = get_array_module(src) is np and bool((lengths == src.shape[1]).all())
        return xp.asarray(src), xp.asarray(mask), (None if full else xp.asarray(lengths))

    def encode(self, src):
        """src (N, Ts) -> hs (N, Ts, H), state (h, c), mask (N, Ts) on the model's device."""
        src, mask, lengths = self._prepare_src(src)
        hs, state = self.encoder.forward(src, lengths)
        return hs, state, mask

    # -- training ---------------------------------------------------------------
    def logits(self, src, tgt):
        """Teacher forcing: src (N, Ts), tgt (N, To + 1) -> logits (N, To, V) for tgt[:, 1:]."""
        check_ids("tgt", tgt, self.config["tgt_vocab_size"])
        if tgt.shape[0] != src.shape[0]:
            raise ValueError(f"tgt: batch size {tgt.shape[0]} does not match src's {src.shape[0]}")
        if tgt.shape[1] < 2:
            raise ValueError(f"tgt: needs at least [bos, eos], got length {tgt.shape[1]}")
        hs, state, mask = self.encode(src)
        return self.decoder.forward(self.xp.asarray(tgt[:, :-1]), hs, state, mask)

    def forward(self, src, tgt):
        """Mean cross-entropy per real target token (a 0-d array on the model's device)."""
        logits = self.logits(src, tgt)                              # (N, To, V)
        return self.loss_layer.forward(logits, self.xp.asarray(tgt[:, 1:]))

    def backward(self, dout: float = 1.0) -> None:
        dlogits = self.loss_layer.backward(dout)
        dhs, dh, dc = self.decoder.backward(dlogits)
        self.encoder.backward(dhs, dh, dc)

    @property
    def attention_weights(self):
        """(N, To, Ts) attention weights of the last forward pass."""
        return self.decoder.attention_weights

    # -- inference ----------------------------------------------------------
    def generate(self, src, max_len: int | None = None):
        """Greedy decoding: src (N, Ts) -> ids (N, L), attention weights (N, L, Ts), on the host.

        ids hold ``pad_id`` after each row's eos. ``max_len`` defaults to
        ``attnseq.run.decoding.default_max_len(Ts)``; the search itself is ``greedy_batch`` there.
        """
        from ..run.decoding import greedy_batch                     # here, not at the top: run/ imports nn/
        return greedy_batch(self, src, max_len)
