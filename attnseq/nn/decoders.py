"""The attention decoder.

An LSTM started from the encoder's final state; for every decoder state h_t,
dot-product attention over the encoder states ``hs`` (padding masked) gives a
context c_t; [c_t, h_t] goes through a linear layer to vocabulary logits.

``forward`` does this for all To steps at once (teacher forcing, with caches for
``backward``); ``step`` does one step for decoding through the same layers'
cache-free pieces (``LSTM.step``, ``Attention.apply``, ``Linear.apply``).
Shapes: N batch, Ts source length, To target length, H hidden size, V vocabulary.
"""
from __future__ import annotations

import numpy as np

from .attention import Attention, mask_bias
from .backend import get_array_module
from .layers import Dropout, Embedding, Linear
from .lstm import LSTM
from .module import Module
from .search import greedy_search


class AttentionDecoder(Module):
    """forward(tgt_in (N, To), hs (N, Ts, H), state (h, c), src_mask (N, Ts)) -> logits (N, To, V).

    src_mask is True at real source tokens; attention gives padding weight 0.
    """

    def __init__(self, vocab_size: int, wordvec_size: int, hidden_size: int, *,
                 rng: np.random.Generator, init: str = "xavier", dtype=np.float32, dropout: float = 0.0):
        super().__init__()
        self.add_module("embed", Embedding(vocab_size, wordvec_size, rng, dtype))
        self.add_module("drop_in", Dropout(dropout, rng))
        self.add_module("lstm", LSTM(wordvec_size, hidden_size, rng, init, dtype))
        self.add_module("attention", Attention())
        self.add_module("drop_out", Dropout(dropout, rng))
        self.add_module("out", Linear(2 * hidden_size, vocab_size, rng, init, dtype))
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size

    # -- teacher forcing ---------------------------------------------------
    def forward(self, tgt_in, hs, state, src_mask=None):
        xp = get_array_module(hs)
        h0, c0 = state
        x = self.drop_in.forward(self.embed.forward(tgt_in))        # (N, To, D)
        hd = self.lstm.forward(x, h0, c0)                           # (N, To, H)
        context = self.attention.forward(hd, hs, src_mask)          # (N, To, H)
        cat = xp.concatenate([context, hd], axis=-1)                # (N, To, 2H)
        return self.out.forward(self.drop_out.forward(cat))         # (N, To, V)

    @property
    def attention_weights(self):
        """The (N, To, Ts) weights of the last forward pass."""
        return self.attention.weights

    def backward(self, dlogits):
        """dlogits (N, To, V) -> dhs (N, Ts, H), dh0, dc0 (N, H)."""
        H = self.hidden_size
        dcat = self.drop_out.backward(self.out.backward(dlogits))   # (N, To, 2H)
        dhd, dhs = self.attention.backward(dcat[..., :H])
        dhd += dcat[..., H:]
        dx, dh0, dc0 = self.lstm.backward(dhd)
        self.embed.backward(self.drop_in.backward(dx))
        return dhs, dh0, dc0

    # -- decoding ------------------------------------------------------------
    def input_table(self):
        """(V, 4H): every token's embedding already projected by the LSTM (x @ Wx + b)."""
        W, = self.embed.params                                      # (V, D): row v embeds token v
        return self.lstm.project(W)

    def step(self, tokens, state, hs, bias, table=None):
        """One decoding step, no cache.

        tokens (N,), state (h, c) each (N, H), hs (N, Ts, H), bias from ``mask_bias``
        (the padding mask as the softmax takes it), table from ``input_table()`` (computed here when None)
        -> logits (N, V), new state, attention weights (N, Ts).
        """
        xp = get_array_module(hs)
        table = self.input_table() if table is None else table
        h, c = self.lstm.step(table[tokens], *state)                # (N, H)
        context, a = self.attention.apply(h[:, None], hs, bias)     # (N, 1, H), (N, 1, Ts)
        logits = self.out.apply(xp.concatenate([context[:, 0], h], axis=1))   # (N, V)
        return logits, (h, c), a[:, 0]

    def generate(self, hs, state, src_mask, bos_id: int, eos_id: int, max_len: int, pad_id: int = 0):
        """Batched greedy decoding.

        -> ids (N, L) with ``pad_id`` after each row's end-of-sequence token, and
        the attention weights (N, L, Ts) of each emitted token (zeros after eos).
        Stops when every row has emitted eos, or after ``max_len`` tokens.
        """
        N, Ts, _ = hs.shape
        bias, table = mask_bias(src_mask, hs.dtype), self.input_table()   # padding, (V, 4H)

        def step(tokens, state):
            return self.step(tokens, state, hs, bias, table)
        return greedy_search(step, state, N, Ts, bos_id, eos_id, max_len, pad_id, get_array_module(hs))
