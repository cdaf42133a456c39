"""The LSTM encoder: token ids (N, Ts) -> all hidden states hs (N, Ts, H) and the decoder's initial state.

Options beyond the book's one forward LSTM: ``layers`` stacked LSTMs with dropout between them,
``bidirectional`` layers (``BiLSTM``: each direction H/2 wide, hs the two concatenated, so hs stays
(N, Ts, H) and every attention score reads it as it is), and a ``Bridge`` from the final states to
the decoder's initial state when the two do not line up one to one.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module
from .layers import Dropout, Embedding, Linear
from .lstm import LSTM
from .module import Module


def reversal_index(xp, N: int, T: int, lengths=None):
    """(N, T) positions that reverse each row's real tokens in place: idx[n, t] = L_n - 1 - t for
    t < L_n and t itself at padding (which stays at the end). Its own inverse."""
    t = xp.arange(T)
    if lengths is None:
        return xp.broadcast_to(T - 1 - t, (N, T))
    L = lengths[:, None]
    return xp.where(t < L, L - 1 - t, t)


def gather_rows(x, idx):
    """x (N, T, D), idx (N, T) -> y (N, T, D) with y[n, t] = x[n, idx[n, t]] (a new array)."""
    return get_array_module(x).take_along_axis(x, idx[:, :, None], axis=1)


class BiLSTM(Module):
    """Two LSTMs over xs (N, T, D), ``fw`` forward in time and ``bw`` backward, each H/2 wide
    -> hs (N, T, H) = [forward states, backward states] on the last axis.

    Over right-padded rows (``lengths`` (N,)) the backward direction of row n starts at its last
    real token: its tokens are reversed in place (``reversal_index``), run through ``bw`` with the
    same lengths, and the states put back in source order, so padding never enters either
    direction's state at a real position. ``h_final``/``c_final`` (N, H): [forward state at the
    last real token, backward state at the first token]. States at padding are meaningless.
    """

    def __init__(self, input_size: int, hidden_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even for a bidirectional encoder (each direction gets "
                             f"hidden_size // 2), got {hidden_size}")
        self.add_module("fw", LSTM(input_size, hidden_size // 2, rng, init, dtype))
        self.add_module("bw", LSTM(input_size, hidden_size // 2, rng, init, dtype))
        self.hidden_size = hidden_size
        self.idx = None
        self.h_final = self.c_final = None

    def forward(self, xs, lengths=None):
        xp = get_array_module(xs)
        N, T, _ = xs.shape
        self.idx = idx = reversal_index(xp, N, T, lengths)        # (N, T)
        hf = self.fw.forward(xs, lengths=lengths)                   # (N, T, H/2)
        hb = gather_rows(self.bw.forward(gather_rows(xs, idx), lengths=lengths), idx)
        self.h_final = xp.concatenate([self.fw.h_final, self.bw.h_final], axis=1)   # (N, H)
        self.c_final = xp.concatenate([self.fw.c_final, self.bw.c_final], axis=1)
        return xp.concatenate([hf, hb], axis=2)                     # (N, T, H)

    def backward(self, dhs, dh_final=None, dc_final=None):
        """dhs (N, T, H), final-state gradients (N, H) or None -> dxs (N, T, D), None, None."""
        H2 = self.hidden_size // 2

        def half(d, k):
            return None if d is None else d[..., k * H2:(k + 1) * H2]
        dxf, _, _ = self.fw.backward(half(dhs, 0), half(dh_final, 0), half(dc_final, 0))
        dxr, _, _ = self.bw.backward(gather_rows(half(dhs, 1), self.idx), half(dh_final, 1), half(dc_final, 1))
        dx = gather_rows(dxr, self.idx)                             # back to source order
        dx += dxf
        return dx, None, None


class Bridge(Module):
    """The encoder's final states -> the decoder's initial state, one linear map and tanh each for h and c.

    hf, cf (N, I): every encoder layer's final state side by side (both directions of a
    bidirectional layer) -> h, c (N, L, H) for L decoder layers, (N, H) when L = 1.
    """

    def __init__(self, in_size: int, layers: int, hidden_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32):
        super().__init__()
        self.add_module("h", Linear(in_size, layers * hidden_size, rng, init, dtype))
        self.add_module("c", Linear(in_size, layers * hidden_size, rng, init, dtype))
        self.layers, self.hidden_size = layers, hidden_size
        self.cache = None

    def _shape(self, x):
        N = x.shape[0]
        return x.reshape(N, self.hidden_size) if self.layers == 1 else x.reshape(N, self.layers, self.hidden_size)

    def forward(self, hf, cf):
        xp = get_array_module(hf)
        h, c = xp.tanh(self.h.forward(hf)), xp.tanh(self.c.forward(cf))   # (N, L*H)
        self.cache = (h, c)
        return self._shape(h), self._shape(c)

    def backward(self, dh, dc):
        """dh, dc in the shape ``forward`` gave -> dhf, dcf (N, I)."""
        h, c = self.cache
        N = h.shape[0]
        dh2 = dh.reshape(N, -1) * (1 - h * h)
        dc2 = dc.reshape(N, -1) * (1 - c * c)
        return self.h.backward(dh2), self.c.backward(dc2)


class Encoder(Module):
    """Embedding, then ``layers`` LSTMs (dropout between them), optionally bidirectional.

    forward(src (N, Ts) ids, lengths (N,) or None) -> hs (N, Ts, H), state (h, c): the top layer's
    states, and the decoder's initial state. Sources are right-padded; final states are taken at
    each row's last real token (the first, for a backward direction), so padding never changes
    them. ``lengths=None`` means no padding. The state has one (h, c) per decoder layer: h, c
    (N, H) for one, (N, L, H) for L. Encoder layer l's final state starts decoder layer l when the
    layer counts agree and the encoder is unidirectional (the book: one and one); otherwise a
    ``Bridge`` maps all final states to the decoder's. In training mode the returned arrays may
    live in the LSTMs' reusable buffers until the next training-mode forward.
    """

    def __init__(self, vocab_size: int, wordvec_size: int, hidden_size: int, *,
                 rng: np.random.Generator, init: str = "xavier", dtype=np.float32, dropout: float = 0.0,
                 layers: int = 1, bidirectional: bool = False, decoder_layers: int | None = None):
        super().__init__()
        decoder_layers = layers if decoder_layers is None else decoder_layers
        rnn = BiLSTM if bidirectional else LSTM
        self.add_module("embed", Embedding(vocab_size, wordvec_size, rng, dtype))
        self.add_module("drop", Dropout(dropout, rng))
        self.add_module("lstm", rnn(wordvec_size, hidden_size, rng, init, dtype))
        for k in range(2, layers + 1):
            self.add_module(f"drop{k}", Dropout(dropout, rng))
            self.add_module(f"lstm{k}", rnn(hidden_size, hidden_size, rng, init, dtype))
        if bidirectional or layers != decoder_layers:
            self.add_module("bridge", Bridge(layers * hidden_size, decoder_layers, hidden_size, rng, init, dtype))
        self.vocab_size = vocab_size
        self.layers = layers

    def _stack(self):
        """[(rnn, dropout before it or None)] bottom to top."""
        return [(self.lstm, None)] + [(getattr(self, f"lstm{k}"), getattr(self, f"drop{k}"))
                                      for k in range(2, self.layers + 1)]

    def forward(self, src, lengths=None):
        xp = get_array_module(src)
        x = self.drop.forward(self.embed.forward(src))              # (N, Ts, D)
        finals = []
        for rnn, drop in self._stack():
            if drop is not None:
                x = drop.forward(x)
            x = rnn.forward(x, lengths=lengths, **self._tokens(rnn, src))   # (N, Ts, H)
            finals.append((rnn.h_final, rnn.c_final))
        if hasattr(self, "bridge"):
            state = self.bridge.forward(*(xp.concatenate(f, axis=1) for f in zip(*finals)))
        elif self.layers == 1:
            state = finals[0]                                       # (N, H) each: the book
        else:
            state = tuple(xp.stack(f, axis=1) for f in zip(*finals))   # (N, L, H) each
        return x, state

    def _tokens(self, rnn, src) -> dict:
        """The bottom LSTM reads the embedding's rows as they are (no dropout between): it may take the
        token ids and the embedding instead (``LSTM.forward``'s ``tokens``)."""
        if rnn is not self.lstm or not isinstance(rnn, LSTM) or self.drop.mask is not None:
            return {}
        return dict(tokens=(src, self.embed.params[0]))

    def backward(self, dhs, dh=None, dc=None):
        """dhs (N, Ts, H) and the state's gradients (its shape, or None); writes all grads."""
        finals = self._final_grads(dh, dc)
        d = dhs
        for (rnn, drop), (dh_l, dc_l) in reversed(list(zip(self._stack(), finals))):
            d, _, _ = rnn.backward(d, dh_l, dc_l)
            if drop is not None:
                d = drop.backward(d)
        if d is None:                                               # the LSTM took the tokens: dE is its
            self.embed.grads[0][...] = self.lstm.dE
        else:
            self.embed.backward(self.drop.backward(d))

    def _final_grads(self, dh, dc):
        """The state's gradients -> [(dh_l, dc_l)] for each layer's final state (None where none)."""
        L = self.layers
        if hasattr(self, "bridge") and dh is not None:
            dhf, dcf = self.bridge.backward(dh, dc)                 # (N, L*H) each
            H = dhf.shape[1] // L
            return [(dhf[:, l * H:(l + 1) * H], dcf[:, l * H:(l + 1) * H]) for l in range(L)]
        if dh is None:
            return [(None, None)] * L
        if L == 1:
            return [(dh, dc)]
        return [(dh[:, l], dc[:, l]) for l in range(L)]
