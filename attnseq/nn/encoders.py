"""The recurrent encoder: token ids (N, Ts) -> all hidden states hs (N, Ts, H) and the decoder's initial state.

The book's encoder is one forward LSTM; ``cell`` "gru" makes it a GRU (``CELLS``). Options beyond
it: ``layers`` stacked layers with dropout between them, ``bidirectional`` layers (``BiRNN``: each
direction H/2 wide, hs the two concatenated, so hs stays (N, Ts, H) and every attention score reads
it as it is), and a ``Bridge`` from the final states to the decoder's initial state when the two do
not line up one to one. A state is a tuple of the cell's parts (``STATE``): (h, c) for the LSTM,
(h,) for the GRU.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module
from .gru import GRU
from .layers import Dropout, Embedding, Linear
from .lstm import LSTM
from .module import Module

CELLS = {"lstm": LSTM, "gru": GRU}      # ``ModelConfig.cell`` -> the layer; a model's modules are named after it


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


class BiRNN(Module):
    """Two recurrent layers over xs (N, T, D), ``fw`` forward in time and ``bw`` backward, each H/2 wide
    -> hs (N, T, H) = [forward states, backward states] on the last axis. ``rnn``: LSTM or GRU.

    Over right-padded rows (``lengths`` (N,)) the backward direction of row n starts at its last
    real token: its tokens are reversed in place (``reversal_index``), run through ``bw`` with the
    same lengths, and the states put back in source order, so padding never enters either
    direction's state at a real position. ``final_state``, each part (N, H): [forward state at the
    last real token, backward state at the first token]. States at padding are meaningless.
    """

    def __init__(self, input_size: int, hidden_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32, rnn=LSTM):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even for a bidirectional encoder (each direction gets "
                             f"hidden_size // 2), got {hidden_size}")
        self.add_module("fw", rnn(input_size, hidden_size // 2, rng, init, dtype))
        self.add_module("bw", rnn(input_size, hidden_size // 2, rng, init, dtype))
        self.STATE = rnn.STATE
        self.hidden_size = hidden_size
        self.idx = None
        self.final_state = None

    @property
    def h_final(self):
        return self.final_state[0]

    @property
    def c_final(self):
        return self.final_state[1]

    def forward(self, xs, lengths=None):
        xp = get_array_module(xs)
        N, T, _ = xs.shape
        self.idx = idx = reversal_index(xp, N, T, lengths)        # (N, T)
        hf = self.fw.forward(xs, lengths=lengths)                   # (N, T, H/2)
        hb = gather_rows(self.bw.forward(gather_rows(xs, idx), lengths=lengths), idx)
        self.final_state = tuple(xp.concatenate(parts, axis=1)     # (N, H) each
                                 for parts in zip(self.fw.final_state, self.bw.final_state))
        return xp.concatenate([hf, hb], axis=2)                     # (N, T, H)

    def backward(self, dhs, *dfinal):
        """dhs (N, T, H), the final state's gradients (N, H) each or None -> dxs (N, T, D), then None
        for each part of the start state (the directions start from zeros)."""
        H2 = self.hidden_size // 2

        def half(d, k):
            return None if d is None else d[..., k * H2:(k + 1) * H2]
        dxf = self.fw.backward(half(dhs, 0), *(half(d, 0) for d in dfinal))[0]
        dxr = self.bw.backward(gather_rows(half(dhs, 1), self.idx), *(half(d, 1) for d in dfinal))[0]
        dx = gather_rows(dxr, self.idx)                             # back to source order
        dx += dxf
        return (dx,) + (None,) * len(self.STATE)


BiLSTM = BiRNN                                                      # its name when the LSTM was the only cell


class Bridge(Module):
    """The encoder's final states -> the decoder's initial state, one linear map and tanh per part of
    the state (``parts``: h and c for the LSTM, h for the GRU; each a ``Linear`` named after it).

    One input per part, (N, I): every encoder layer's final state side by side (both directions of
    a bidirectional layer) -> one output per part, (N, L, H) for L decoder layers, (N, H) when L = 1.
    """

    def __init__(self, in_size: int, layers: int, hidden_size: int, rng: np.random.Generator,
                 init: str = "xavier", dtype=np.float32, parts=LSTM.STATE):
        super().__init__()
        for part in parts:
            self.add_module(part, Linear(in_size, layers * hidden_size, rng, init, dtype))
        self.parts, self.layers, self.hidden_size = tuple(parts), layers, hidden_size
        self.cache = None

    def _shape(self, x):
        N = x.shape[0]
        return x.reshape(N, self.hidden_size) if self.layers == 1 else x.reshape(N, self.layers, self.hidden_size)

    def forward(self, *finals):
        xp = get_array_module(finals[0])
        self.cache = tuple(xp.tanh(getattr(self, part).forward(x)) for part, x in zip(self.parts, finals))  # (N, L*H)
        return tuple(self._shape(y) for y in self.cache)

    def backward(self, *dstate):
        """The state's gradients, in the shape ``forward`` gave -> the inputs' (N, I) each."""
        return tuple(getattr(self, part).backward(d.reshape(y.shape[0], -1) * (1 - y * y))
                     for part, y, d in zip(self.parts, self.cache, dstate))


class Encoder(Module):
    """Embedding, then ``layers`` recurrent layers of ``cell`` (dropout between them), optionally bidirectional.

    forward(src (N, Ts) ids, lengths (N,) or None) -> hs (N, Ts, H), state: the top layer's states,
    and the decoder's initial state, a tuple of the cell's parts ((h, c) or (h,)). Sources are
    right-padded; final states are taken at each row's last real token (the first, for a backward
    direction), so padding never changes them. ``lengths=None`` means no padding. Each part is
    (N, H) for one decoder layer, (N, L, H) for L. Encoder layer l's final state starts decoder layer
    l when the layer counts agree and the encoder is unidirectional (the book: one and one);
    otherwise a ``Bridge`` maps all final states to the decoder's. The layers are modules named
    after the cell: ``lstm``, ``lstm2`` ... or ``gru``, ``gru2`` .... In training mode the returned
    arrays may live in the layers' reusable buffers until the next training-mode forward.
    """

    def __init__(self, vocab_size: int, wordvec_size: int, hidden_size: int, *,
                 rng: np.random.Generator, init: str = "xavier", dtype=np.float32, dropout: float = 0.0,
                 layers: int = 1, bidirectional: bool = False, decoder_layers: int | None = None,
                 cell: str = "lstm"):
        super().__init__()
        decoder_layers = layers if decoder_layers is None else decoder_layers
        cls = CELLS[cell]

        def layer(d_in):
            if bidirectional:
                return BiRNN(d_in, hidden_size, rng, init, dtype, rnn=cls)
            return cls(d_in, hidden_size, rng, init, dtype)
        self.add_module("embed", Embedding(vocab_size, wordvec_size, rng, dtype))
        self.add_module("drop", Dropout(dropout, rng))
        self.add_module(cell, layer(wordvec_size))
        for k in range(2, layers + 1):
            self.add_module(f"drop{k}", Dropout(dropout, rng))
            self.add_module(f"{cell}{k}", layer(hidden_size))
        if bidirectional or layers != decoder_layers:
            self.add_module("bridge", Bridge(layers * hidden_size, decoder_layers, hidden_size, rng, init, dtype,
                                             parts=cls.STATE))
        self.vocab_size = vocab_size
        self.layers = layers
        self.cell = cell

    def _stack(self):
        """[(rnn, dropout before it or None)] bottom to top."""
        c = self.cell
        return [(getattr(self, c), None)] + [(getattr(self, f"{c}{k}"), getattr(self, f"drop{k}"))
                                             for k in range(2, self.layers + 1)]

    def forward(self, src, lengths=None):
        xp = get_array_module(src)
        x = self.drop.forward(self.embed.forward(src))              # (N, Ts, D)
        finals = []
        for rnn, drop in self._stack():
            if drop is not None:
                x = drop.forward(x)
            x = rnn.forward(x, lengths=lengths, **self._tokens(rnn, src))   # (N, Ts, H)
            finals.append(rnn.final_state)
        if hasattr(self, "bridge"):
            state = self.bridge.forward(*(xp.concatenate(f, axis=1) for f in zip(*finals)))
        elif self.layers == 1:
            state = finals[0]                                       # (N, H) each: the book
        else:
            state = tuple(xp.stack(f, axis=1) for f in zip(*finals))   # (N, L, H) each
        return x, state

    def _tokens(self, rnn, src) -> dict:
        """The bottom layer, an LSTM, reads the embedding's rows as they are (no dropout between): it may take
        the token ids and the embedding instead (``LSTM.forward``'s ``tokens``; a GRU takes the rows)."""
        if rnn is not getattr(self, self.cell) or not isinstance(rnn, LSTM) or self.drop.mask is not None:
            return {}
        return dict(tokens=(src, self.embed.params[0]))

    def backward(self, dhs, *dstate):
        """dhs (N, Ts, H) and the state's gradients (one per part, in its shape; none, or None, when
        none reaches it); writes all grads."""
        finals = self._final_grads(dstate)
        d = dhs
        for (rnn, drop), dfinal in reversed(list(zip(self._stack(), finals))):
            d = rnn.backward(d, *dfinal)[0]
            if drop is not None:
                d = drop.backward(d)
        if d is None:                                               # the LSTM took the tokens: dE is its
            self.embed.grads[0][...] = getattr(self, self.cell).dE
        else:
            self.embed.backward(self.drop.backward(d))

    def _final_grads(self, dstate):
        """The state's gradients -> for each layer, the gradients of its final state's parts (() when none)."""
        L = self.layers
        if not dstate or dstate[0] is None:
            return [()] * L
        if hasattr(self, "bridge"):
            dfs = self.bridge.backward(*dstate)                     # (N, L*H) each
            H = dfs[0].shape[1] // L
            return [tuple(d[:, l * H:(l + 1) * H] for d in dfs) for l in range(L)]
        if L == 1:
            return [tuple(dstate)]
        return [tuple(d[:, l] for d in dstate) for l in range(L)]
