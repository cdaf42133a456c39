"""The attention decoder.

An LSTM (``cell`` "gru": a GRU) started from the encoder's final state; for every decoder state h_t,
attention over the encoder states ``hs`` (padding masked) gives a context c_t; [c_t, h_t] goes through a linear layer
to vocabulary logits (the book's decoder). Options:

- ``layers`` stacked recurrent layers, dropout between them; attention reads the top one.
- ``attention``: the score, "dot" (the book's), "general" or "additive" (see ``attention.py``).
- ``input_feeding`` (Luong): the attentional vector h~_t = tanh(W_c [c_t, h_t] + b_c) (N, H) is what
  the output layer reads, and it joins the next step's input: the bottom LSTM reads [y_{t-1}, h~_{t-1}]
  (D + H), h~_0 = 0. Teacher forcing then runs every layer and the attention step by step
  (``_forward_feeding``), in preallocated time-major buffers, the embeddings' share of the LSTM input
  projection for all steps in one product and only h~'s share per step; its backward goes back
  through time step by step.
- ``tie_embeddings``: the output layer is ``TiedOutput``, logits = (x W_p + b_p) E^T + b with E the
  decoder's input embedding (V, D): one array in the checkpoint, its gradient from both uses.

``forward`` does all To steps (teacher forcing, with caches for ``backward``); ``step`` does one
step for decoding through the same layers' cache-free pieces (``LSTM.step``, ``Attention.apply``,
``Linear.apply``). Shapes: N batch, Ts source length, To target length, D embedding size, H hidden
size, V vocabulary, L layers.

The decoding state (what ``step`` takes and returns, what ``initial_state`` makes from the
encoder's): a tuple of the cell's parts, the pair (h, c) for the LSTM, (h,) for the GRU. For the
book's decoder (one layer, no input feeding) each is (N, H). Otherwise they stack rows: c (N, L, H)
one row per layer, h (N, L, H) likewise and, with input feeding, one more row at the end holding h~
of the last step: h (N, L + 1, H). Every search reorders it along N like any other state.
"""
from __future__ import annotations

import numpy as np

from .attention import SCORES, Attention, mask_bias
from .backend import get_array_module
from .layers import Dropout, Embedding, Linear, TiedOutput
from .encoders import CELLS
from .lstm import LSTM
from .module import Module
from .profile import part
from .search import greedy_search, log_softmax


class AttentionDecoder(Module):
    """forward(tgt_in (N, To), hs (N, Ts, H), state, src_mask (N, Ts)) -> logits (N, To, V).

    src_mask is True at real source tokens; attention gives padding weight 0. ``state`` is the
    encoder's (see ``Encoder``) or ``initial_state`` of it.
    """

    def __init__(self, vocab_size: int, wordvec_size: int, hidden_size: int, *,
                 rng: np.random.Generator, init: str = "xavier", dtype=np.float32, dropout: float = 0.0,
                 layers: int = 1, attention: str = "dot", input_feeding: bool = False,
                 tie_embeddings: bool = False, cell: str = "lstm"):
        super().__init__()
        if attention not in SCORES:
            raise ValueError(f"attention must be one of {', '.join(SCORES)}, got {attention!r}")
        D, H = wordvec_size, hidden_size
        self.add_module("embed", Embedding(vocab_size, D, rng, dtype))
        self.add_module("drop_in", Dropout(dropout, rng))
        rnn = CELLS[cell]                                           # its layers are named after it: lstm, lstm2 ...
        self.add_module(cell, rnn(D + (H if input_feeding else 0), H, rng, init, dtype))
        for k in range(2, layers + 1):
            self.add_module(f"drop{k}", Dropout(dropout, rng))
            self.add_module(f"{cell}{k}", rnn(H, H, rng, init, dtype))
        self.add_module("attention", Attention(attention, H, rng, init, dtype))
        if input_feeding:
            self.add_module("attentional", Linear(2 * H, H, rng, init, dtype))     # W_c, b_c
        self.add_module("drop_out", Dropout(dropout, rng))
        out_in = H if input_feeding else 2 * H
        self.add_module("out", TiedOutput(out_in, D, vocab_size, rng, init, dtype) if tie_embeddings
                        else Linear(out_in, vocab_size, rng, init, dtype))
        self.vocab_size = vocab_size
        self.wordvec_size = wordvec_size
        self.hidden_size = hidden_size
        self.layers = layers
        self.input_feeding = input_feeding
        self.tie_embeddings = tie_embeddings
        self.cell = cell
        self._feeding = None                                        # _forward_feeding's cache

    @property
    def rnn(self):
        """The bottom recurrent layer (``lstm`` or ``gru``), which reads the embeddings."""
        return getattr(self, self.cell)

    def _stack(self):
        """[(rnn, dropout before it or None)] bottom to top."""
        c = self.cell
        return [(self.rnn, None)] + [(getattr(self, f"{c}{k}"), getattr(self, f"drop{k}"))
                                     for k in range(2, self.layers + 1)]

    # -- the state -------------------------------------------------------------
    @property
    def _stacked(self) -> bool:
        return self.layers > 1 or self.input_feeding

    def initial_state(self, state):
        """The encoder's state -> the decoding state: with input feeding, h gets the h~_0 = 0 row."""
        if not self.input_feeding:
            return tuple(state)
        h, *rest = state
        xp = get_array_module(h)
        if h.ndim == 2:
            h, rest = h[:, None], [p[:, None] for p in rest]       # (N, 1, H)
        if h.shape[1] > self.layers:                                # it has its h~ row already
            return (h, *rest)
        return (xp.concatenate([h, xp.zeros_like(h[:, :1])], axis=1), *rest)

    def _split_state(self, state):
        """The decoding state -> [the state of layer l, a tuple of (N, H) parts] per layer, and h~
        (N, H) or None (zeros)."""
        if not self._stacked:
            return [tuple(state)], None
        if state[0].ndim == 2:                                      # an encoder's single layer
            state = tuple(p[:, None] for p in state)
        L = self.layers
        feed = state[0][:, L] if self.input_feeding and state[0].shape[1] > L else None
        return [tuple(p[:, l] for p in state) for l in range(L)], feed

    def _join_state(self, layer_states, feed):
        """``_split_state``'s inverse: the layers' states (and h~) -> the decoding state."""
        if not self._stacked:
            return tuple(layer_states[0])
        xp = get_array_module(layer_states[0][0])
        hs, *rest = zip(*layer_states)                              # each part over the layers
        h = xp.stack(list(hs) + ([feed] if self.input_feeding else []), axis=1)
        return (h, *(xp.stack(p, axis=1) for p in rest))

    def _encoder_grads(self, d0s):
        """Per-layer start-state gradients, [(dh0, dc0) or (dh0,)] -> one per part, in the shape of
        the encoder's state: (N, H) or (N, L, H)."""
        if self.layers == 1:
            return tuple(d0s[0])
        xp = get_array_module(d0s[0][0])
        return tuple(xp.stack(p, axis=1) for p in zip(*d0s))

    # -- the output layer ------------------------------------------------------
    def _out_forward(self, x):
        x = self.drop_out.forward(x)
        with part("output layer"):
            return self.out.forward(x, self.embed.params[0]) if self.tie_embeddings else self.out.forward(x)

    def _out_backward(self, dlogits):
        with part("output layer"):
            return self.drop_out.backward(self.out.backward(dlogits))

    def _out_apply(self, x):
        return self.out.apply(x, self.embed.params[0]) if self.tie_embeddings else self.out.apply(x)

    def _embed_backward(self, dx):
        """dx (N, To, D) the embeddings' gradient -> the embedding's; a tied E adds the output's share.
        dx None: the bottom LSTM took the tokens and left the embedding's gradient in its ``dE``."""
        if dx is None:
            self.embed.grads[0][...] = self.rnn.dE
        else:
            self.embed.backward(self.drop_in.backward(dx))
        if self.tie_embeddings:
            self.embed.grads[0] += self.out.dE

    # -- teacher forcing ---------------------------------------------------
    def forward(self, tgt_in, hs, state, src_mask=None):
        if self.input_feeding:
            return self._forward_feeding(tgt_in, hs, state, src_mask)
        xp = get_array_module(hs)
        s0s, _ = self._split_state(state)
        x = self.drop_in.forward(self.embed.forward(tgt_in))        # (N, To, D)
        tokens = (tgt_in, self.embed.params[0]) if self.drop_in.mask is None else None   # the embedding's rows as they are
        for l, (rnn, drop) in enumerate(self._stack()):
            if drop is not None:
                x = drop.forward(x)
            fold = dict(tokens=tokens) if l == 0 and tokens is not None and isinstance(rnn, LSTM) else {}
            x = rnn.forward(x, *s0s[l], **fold)                     # (N, To, H)
        context = self.attention.forward(x, hs, src_mask)           # (N, To, H)
        N, To, H = x.shape
        cat = self.buffer("cat", (N, To, 2 * H), x.dtype, xp)       # [context, x] (N, To, 2H)
        cat[..., :H], cat[..., H:] = context, x
        return self._out_forward(cat)                               # (N, To, V)

    @property
    def attention_weights(self):
        """The (N, To, Ts) weights of the last forward pass."""
        return self.attention.weights

    def backward(self, dlogits):
        """dlogits (N, To, V) -> dhs (N, Ts, H), then the gradient of each part of the encoder's state
        (dh0, dc0 for the LSTM, dh0 for the GRU), in its shape."""
        if self.input_feeding:
            return self._backward_feeding(dlogits)
        H = self.hidden_size
        dcat = self._out_backward(dlogits)                          # (N, To, 2H)
        dhd, dhs = self.attention.backward(dcat[..., :H])
        dhd += dcat[..., H:]
        d0s = []
        d = dhd
        for rnn, drop in reversed(self._stack()):
            d, *d0 = rnn.backward(d)
            d0s.insert(0, d0)
            if drop is not None:
                d = drop.backward(d)
        self._embed_backward(d)
        return (dhs,) + self._encoder_grads(d0s)

    # -- teacher forcing with input feeding: step by step ----------------------------------------
    def _forward_feeding(self, tgt_in, hs, state, src_mask):
        xp = get_array_module(hs)
        N, To = tgt_in.shape
        H, dt = self.hidden_size, hs.dtype
        stack = self._stack()
        s0s, feed0 = self._split_state(state)
        x = self.drop_in.forward(self.embed.forward(tgt_in))        # (N, To, D)
        x_tm = self.buffer("x_tm", (To, N, x.shape[2]), dt, xp)     # (To, N, D) time-major
        x_tm[...] = x.transpose(1, 0, 2)
        stack[0][0].begin_steps(To, N, *s0s[0], fixed=x_tm, dtype=dt, xp=xp)
        masks = [None]
        for l, (rnn, drop) in enumerate(stack[1:], 1):
            rnn.begin_steps(To, N, *s0s[l], dtype=dt, xp=xp)
            masks.append(drop.draw((To, N, H), dt, xp))             # (To, N, H) or None
        self.attention.begin_steps(hs, src_mask, To)
        Wc, bc = self.attentional.params
        cat = self.buffer("cat", (To, N, 2 * H), dt, xp)            # [c_t, h_t] of every step
        Ht = self.buffer("Ht", (To + 1, N, H), dt, xp)              # Ht[t + 1] = h~_t, Ht[0] = h~_0
        Ht[0] = 0 if feed0 is None else feed0
        for t in range(To):
            stack[0][0].inputs(t)[...] = Ht[t]                      # h~_{t-1} joins the input
            h = stack[0][0].run_step(t)                             # (N, H)
            for (rnn, _), mask in zip(stack[1:], masks[1:]):
                xp.multiply(h, 1 if mask is None else mask[t], out=rnn.inputs(t))
                h = rnn.run_step(t)
            with part("attention"):
                cat[t, :, :H] = self.attention.forward_step(t, h)   # c_t (N, H)
            cat[t, :, H:] = h
            xp.matmul(cat[t], Wc, out=Ht[t + 1])                    # (N, H)
            Ht[t + 1] += bc
            xp.tanh(Ht[t + 1], out=Ht[t + 1])
        logits = self._out_forward(Ht[1:].transpose(1, 0, 2))       # (N, To, V) from h~ (N, To, H)
        self._feeding = (masks, cat, Ht) if self.training else None
        if not self.training:                                       # nothing kept for a backward
            for rnn, _ in stack:
                rnn.cache = None
            self.attention._steps = None
        return logits

    def _backward_feeding(self, dlogits):
        xp = get_array_module(dlogits)
        masks, cat, Ht = self._feeding
        To, N, H2 = cat.shape
        H, dt = H2 // 2, cat.dtype
        stack = self._stack()
        Wc = self.attentional.params[0]
        dHt = self.buffer("dHt", (To, N, H), dt, xp)                # from the output layer, then at h~_t
        dHt[...] = self._out_backward(dlogits).transpose(1, 0, 2)
        dPre = self.buffer("dPre", (To, N, H), dt, xp)              # at W_c [c_t, h_t] + b_c
        dcat = self.buffer("dcat", (N, 2 * H), dt, xp)
        dfeed = self.buffer("dfeed", (N, H), dt, xp)                # from step t + 1's input into h~_t
        dfeed.fill(0)
        for rnn, _ in stack:
            rnn.begin_backward_steps()
        for t in range(To - 1, -1, -1):
            g = dPre[t]
            xp.add(dHt[t], dfeed, out=g)                            # all of h~_t's gradient
            xp.multiply(Ht[t + 1], Ht[t + 1], out=dHt[t])           # dHt[t] is spent: scratch
            xp.subtract(1, dHt[t], out=dHt[t])
            g *= dHt[t]                                             # through the tanh
            xp.matmul(g, Wc.T, out=dcat)                            # (N, 2H) -> [dc_t, dh_t]
            dh = dcat[:, H:]
            with part("attention"):
                dh += self.attention.backward_step(t, dcat[:, :H])
            for (rnn, _), mask in zip(stack[:0:-1], masks[:0:-1]):
                dh = rnn.backward_step(t, dh)                       # (N, H) into the layer below
                if mask is not None:
                    dh *= mask[t]
            dfeed = stack[0][0].backward_step(t, dh)                # (N, H) into h~_{t-1}
        self.attentional.param_grads(cat, dPre)                     # all steps in one product
        with part("attention"):
            dhs = self.attention.end_backward_steps()               # (N, Ts, H)
        d0s = []
        for rnn, _ in stack:
            dx_tm, *d0 = rnn.end_backward_steps()
            if rnn is self.rnn:
                dx = dx_tm.transpose(1, 0, 2)                       # (N, To, D) at the embeddings
            d0s.append(d0)
        self._embed_backward(dx)
        return (dhs,) + self._encoder_grads(d0s)

    # -- decoding ------------------------------------------------------------
    def input_table(self):
        """(V, 4H) (GRU: (V, 3H)): every token's embedding already projected by the bottom recurrent
        layer (x @ Wx + b; with input feeding, the embedding rows of Wx only)."""
        W, = self.embed.params                                      # (V, D): row v embeds token v
        return self.rnn.project(W)

    def step(self, tokens, state, hs, bias, table=None):
        """One decoding step, no cache.

        tokens (N*R,), state the decoding state (see the module docstring), hs (N, Ts, H), bias from
        ``mask_bias`` (the padding mask as the softmax takes it), table from ``input_table()``
        (computed here when None) -> logits (N*R, V), new state, attention weights (N*R, Ts).
        R rows of the state (adjacent: a beam's hypotheses) share each source row of hs, so beam
        search attends with (N, R, H) queries against hs as it is, never repeated R times; R = 1
        for greedy. The attention's keys are made once per hs (``AttentionWeights.keys_for``).
        """
        xp = get_array_module(hs)
        table = self.input_table() if table is None else table
        states, feed = self._split_state(state)
        xw = table[tokens]                                          # (N, 4H), a new array
        if feed is not None:
            xw += feed @ self.rnn.params[0][self.wordvec_size:]    # h~_{t-1}'s share of the input
        new = []
        for l, (rnn, _) in enumerate(self._stack()):
            new.append(rnn.step(xw if l == 0 else rnn.project(h), *states[l]))   # (h, c) or (h,), (N, H) each
            h = new[-1][0]
        N, Ts, H = hs.shape
        context, a = self.attention.apply(h.reshape(N, -1, h.shape[1]), hs, bias)   # (N, R, H), (N, R, Ts)
        x = xp.concatenate([context.reshape(-1, H), h], axis=1)     # (N*R, 2H)
        if self.input_feeding:
            x = feed = xp.tanh(self.attentional.apply(x))           # h~_t (N, H)
        logits = self._out_apply(x)                                 # (N, V)
        return logits, self._join_state(new, feed), a.reshape(-1, Ts)

    def generate(self, hs, state, src_mask, bos_id: int, eos_id: int, max_len: int, pad_id: int = 0):
        """Batched greedy decoding from the encoder's output (its state, or ``initial_state`` of it):
        ``greedy_search`` over ``step_fn``, the one greedy path (``AttentionSeq2seq.generate`` and
        ``attnseq.run.decoding`` come here).

        -> ids (N, L) with ``pad_id`` after each row's end-of-sequence token, and
        the attention weights (N, L, Ts) of each emitted token (zeros after eos).
        Stops when every row has emitted eos, or after ``max_len`` tokens.
        """
        N, Ts, _ = hs.shape
        return greedy_search(self.step_fn(hs, src_mask), self.initial_state(state), N, Ts, bos_id, eos_id,
                             max_len, pad_id, get_array_module(hs))

    def step_fn(self, hs, src_mask, log_probs: bool = False):
        """``step`` over encoder states hs (N, Ts, H) with padding mask src_mask (N, Ts), as the searches
        take it: step(tokens (N*R,), state) -> logits (or, with ``log_probs``, log-probabilities)
        (N*R, V), new state, attention (N*R, Ts). The padding bias, the input table and a contiguous
        hs are made once here, for every step."""
        bias, table = mask_bias(src_mask, hs.dtype), self.input_table()   # padding, (V, 4H)
        hs = get_array_module(hs).ascontiguousarray(hs)             # every step reads it by rows

        def step(tokens, state):
            logits, state, a = self.step(tokens, state, hs, bias, table)
            return (log_softmax(logits) if log_probs else logits), state, a
        return step
