"""``AttentionSeq2seq``: the encoder and the attention decoder, with a loss."""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, to_numpy
from .checks import check_ids, check_mask
from .config import ModelConfig
from .decoders import AttentionDecoder
from .encoders import Encoder
from .layers import SoftmaxCrossEntropy
from .module import Module
from .profile import part
from .output_length import LEGACY_RULE, OutputLengthRule, output_limit
from ..data.tokenizers import BOS_ID, EOS_ID, PAD_ID


class AttentionSeq2seq(Module):
    """Encoder + AttentionDecoder + masked softmax cross-entropy.

    Batches are token-id arrays, right-padded with ``pad_id``:
    ``src`` (N, Ts) and ``tgt`` (N, To + 1) = [bos, y_1 .. y_k, eos, pad ..].
    The decoder reads ``tgt[:, :-1]`` and is scored against ``tgt[:, 1:]``.

    Options (keywords; each a field of ``config``, a ``ModelConfig``, whose defaults are the book's
    model, and a config without a key means its default, so older checkpoints load as they were):
    ``encoder_layers``, ``decoder_layers`` (>= 1, ``dropout`` between layers); ``bidirectional``
    encoder (each direction hidden_size // 2, hs their concatenation: hidden_size must be even;
    a bridge, linear + tanh, maps the final states to the decoder's, as it does whenever the layer
    counts differ); ``attention`` "dot" | "general" | "additive"; ``input_feeding`` (Luong);
    ``label_smoothing`` eps in [0, 1) in the training loss; ``tie_embeddings`` (the decoder's
    input embedding is also its output projection); ``cell`` "lstm" | "gru" (the book's GRU, whose
    state is h alone: the decoding state is then (h,) where the LSTM's is (h, c)).

    ``output_len_rule``: the longest output ``generate`` and every search decode by default
    (``attnseq.nn.output_length``): 2 * Ts + 10 for a new model; the Trainer fits it to the training
    split, and checkpoints save and load it with the weights.
    """
    config: ModelConfig
    output_len_rule: OutputLengthRule

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, wordvec_size: int = 16,
                 hidden_size: int = 256, *, dropout: float = 0.0, init: str = "xavier",
                 dtype="float32", seed: int = 0, pad_id: int = PAD_ID, bos_id: int = BOS_ID,
                 eos_id: int = EOS_ID, **options):
        super().__init__()
        self.config = c = ModelConfig.from_dict(dict(
            src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, wordvec_size=wordvec_size,
            hidden_size=hidden_size, dropout=dropout, init=init, dtype=dtype, seed=seed, pad_id=pad_id,
            bos_id=bos_id, eos_id=eos_id, **options))
        self.output_len_rule = LEGACY_RULE
        rng = np.random.default_rng(c.seed)
        kw = dict(rng=rng, init=c.init, dtype=np.dtype(c.dtype), dropout=c.dropout)
        self.add_module("encoder", Encoder(c.src_vocab_size, c.wordvec_size, c.hidden_size, layers=c.encoder_layers,
                                           bidirectional=c.bidirectional, decoder_layers=c.decoder_layers,
                                           cell=c.cell, **kw))
        self.add_module("decoder", AttentionDecoder(c.tgt_vocab_size, c.wordvec_size, c.hidden_size,
                                                    layers=c.decoder_layers, attention=c.attention,
                                                    input_feeding=c.input_feeding,
                                                    tie_embeddings=c.tie_embeddings, cell=c.cell, **kw))
        self.add_module("loss_layer", SoftmaxCrossEntropy(ignore_index=c.pad_id, smoothing=c.label_smoothing))
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id

    @classmethod
    def from_config(cls, config: ModelConfig | dict) -> "AttentionSeq2seq":
        """The model ``config`` describes: a ModelConfig, or a dict of its fields (config.json's "model")."""
        c = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
        return cls(**c.to_dict())

    # -- encoding ---------------------------------------------------------------
    def _prepare_src(self, src):
        """Check ids, derive mask and lengths on the host, move them to the model's device."""
        xp = self.xp
        check_ids("src", src, self.config.src_vocab_size)
        mask = check_mask("src (padding mask)", src != self.pad_id)
        lengths = mask.sum(axis=1)
        full = get_array_module(src) is np and bool((lengths == src.shape[1]).all())
        return xp.asarray(src), xp.asarray(mask), (None if full else xp.asarray(lengths))

    def encode(self, src):
        """src (N, Ts) -> hs (N, Ts, H), the decoding state ((h, c); a GRU's (h,)), mask (N, Ts) on the
        model's device. Each part is (N, H) for the book's decoder, else stacked rows (see ``decoders``)."""
        src, mask, lengths = self._prepare_src(src)
        hs, state = self.encoder.forward(src, lengths)
        return hs, self.decoder.initial_state(state), mask

    # -- training ---------------------------------------------------------------
    def logits(self, src, tgt):
        """Teacher forcing: src (N, Ts), tgt (N, To + 1) -> logits (N, To, V) for tgt[:, 1:]."""
        check_ids("tgt", tgt, self.config.tgt_vocab_size)
        if tgt.shape[0] != src.shape[0]:
            raise ValueError(f"tgt: batch size {tgt.shape[0]} does not match src's {src.shape[0]}")
        if tgt.shape[1] < 2:
            raise ValueError(f"tgt: needs at least [bos, eos], got length {tgt.shape[1]}")
        hs, state, mask = self.encode(src)
        return self.decoder.forward(self.xp.asarray(tgt[:, :-1]), hs, state, mask)

    def forward(self, src, tgt):
        """Mean cross-entropy per real target token (a 0-d array on the model's device)."""
        logits = self.logits(src, tgt)                              # (N, To, V)
        with part("output layer"):
            return self.loss_layer.forward(logits, self.xp.asarray(tgt[:, 1:]))

    def backward(self, dout: float = 1.0) -> None:
        with part("output layer"):
            dlogits = self.loss_layer.backward(dout)
        dhs, *dstate = self.decoder.backward(dlogits)
        self.encoder.backward(dhs, *dstate)

    @property
    def attention_weights(self):
        """(N, To, Ts) attention weights of the last forward pass."""
        return self.decoder.attention_weights

    # -- inference ----------------------------------------------------------
    def greedy(self, hs, state, mask, max_len=None):
        """Greedy decoding from ``encode``'s output hs (N, Ts, H), state, mask (N, Ts) -> ids (N, L) with
        ``pad_id`` after each row's eos, attention weights (N, L, Ts), on the model's device: the decoder's
        ``generate``, stopping at ``max_len`` (tokens, or an ``OutputLengthRule``; None: ``output_len_rule``)."""
        limit = output_limit(hs.shape[1], max_len, self.output_len_rule)
        return self.decoder.generate(hs, state, mask, self.bos_id, self.eos_id, limit, self.pad_id)

    def generate(self, src, max_len=None):
        """Greedy decoding of a batch src (N, Ts) in eval mode -> ids (N, L), attention weights (N, L, Ts),
        on the host (see ``greedy``)."""
        with self.eval_mode():                                      # no dropout, no backward caches
            ids, weights = self.greedy(*self.encode(src), max_len)
        return to_numpy(ids), to_numpy(weights)

    def start(self, src, k: int = 1, log_probs: bool = False):
        """Where a search over this model starts (``attnseq.nn.search``'s engines): a batch src (N, Ts) ->
        the decoder's step function over its encoding (logits, or log-probabilities with ``log_probs``) and
        the start state with k adjacent rows per source (a beam's hypotheses, or k samples). The k rows of a
        source share its row of hs, which is not repeated (the step attends with (N, k, H) queries).
        Call it in eval mode."""
        hs, state, mask = self.encode(src)
        if k > 1:
            state = tuple(self.xp.repeat(s, k, axis=0) for s in state)
        return self.decoder.step_fn(hs, mask, log_probs), state
