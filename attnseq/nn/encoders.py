"""The LSTM encoder: token ids (N, Ts) -> all hidden states hs (N, Ts, H) and the final state (h, c) (N, H)."""
from __future__ import annotations

import numpy as np

from .layers import Dropout, Embedding
from .lstm import LSTM
from .module import Module


class Encoder(Module):
    """Embedding, then LSTM.

    forward(src (N, Ts) ids, lengths (N,) or None) -> hs (N, Ts, H), (h, c) each (N, H).
    Sources are right-padded; the final state is taken at each row's last real
    token, so padding never changes it. ``lengths=None`` means no padding. In training mode the
    returned arrays live in the LSTM's reusable buffers until the next training-mode forward.
    """

    def __init__(self, vocab_size: int, wordvec_size: int, hidden_size: int, *,
                 rng: np.random.Generator, init: str = "xavier", dtype=np.float32, dropout: float = 0.0):
        super().__init__()
        self.add_module("embed", Embedding(vocab_size, wordvec_size, rng, dtype))
        self.add_module("drop", Dropout(dropout, rng))
        self.add_module("lstm", LSTM(wordvec_size, hidden_size, rng, init, dtype))
        self.vocab_size = vocab_size

    def forward(self, src, lengths=None):
        x = self.drop.forward(self.embed.forward(src))              # (N, Ts, D)
        hs = self.lstm.forward(x, lengths=lengths)                  # (N, Ts, H)
        return hs, (self.lstm.h_final, self.lstm.c_final)

    def backward(self, dhs, dh=None, dc=None):
        """dhs (N, Ts, H) and the final state's gradients (N, H); writes all grads."""
        dx, _, _ = self.lstm.backward(dhs, dh, dc)
        self.embed.backward(self.drop.backward(dx))
