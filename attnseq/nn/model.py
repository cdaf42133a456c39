"""``AttentionSeq2seq``: the encoder and the attention decoder, with a loss."""
from __future__ import annotations

import numpy as np

from .backend import get_array_module
from .checks import check_ids, check_mask
from .decoders import AttentionDecoder
from .encoders import Encoder
from .attention import SCORES
from .layers import INIT_SCHEMES, SoftmaxCrossEntropy
from .module import Module
from ..data.tokenizers import BOS_ID, EOS_ID, PAD_ID


# The options beyond the book's model, with the book's values: what AttentionSeq2seq takes as keywords
# besides sizes, dropout, init, dtype, seed and the special ids. The one list of them: the training
# flags take their defaults from it and the ONNX export its book model.
MODEL_DEFAULTS = dict(encoder_layers=1, decoder_layers=1, bidirectional=False, attention="dot",
                      input_feeding=False, label_smoothing=0.0, tie_embeddings=False)


def _check_count(name: str, v) -> None:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _checked_options(options: dict, hidden_size: int) -> dict:
    """``MODEL_DEFAULTS`` updated with ``options``, each checked (ValueError naming it; an unknown
    one is a TypeError, as for any keyword) and as a plain int, bool, float or str."""
    unknown = sorted(set(options) - set(MODEL_DEFAULTS))
    if unknown:
        raise TypeError(f"AttentionSeq2seq got unknown option(s) {', '.join(unknown)}; "
                        f"its options are {', '.join(MODEL_DEFAULTS)}")
    o = {**MODEL_DEFAULTS, **options}
    for name in ("encoder_layers", "decoder_layers"):
        _check_count(name, o[name])
    for name in ("bidirectional", "input_feeding", "tie_embeddings"):
        if not isinstance(o[name], (bool, np.bool_)):
            raise ValueError(f"{name} must be true or false, got {o[name]!r}")
    if o["attention"] not in SCORES:
        raise ValueError(f"attention must be one of {', '.join(SCORES)}, got {o['attention']!r}")
    eps = o["label_smoothing"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {eps!r}")
    if o["bidirectional"] and hidden_size % 2:
        raise ValueError(f"hidden_size must be even for a bidirectional encoder (each direction gets "
                         f"hidden_size // 2), got {hidden_size}")
    return {k: type(default)(o[k]) for k, default in MODEL_DEFAULTS.items()}


class AttentionSeq2seq(Module):
    """Encoder + AttentionDecoder + masked softmax cross-entropy.

    Batches are token-id arrays, right-padded with ``pad_id``:
    ``src`` (N, Ts) and ``tgt`` (N, To + 1) = [bos, y_1 .. y_k, eos, pad ..].
    The decoder reads ``tgt[:, :-1]`` and is scored against ``tgt[:, 1:]``.

    Options (keywords, ``MODEL_DEFAULTS`` has them with their defaults, the book's model; each is
    also a key of ``config``, and a config without a key means its default, so older checkpoints
    load as they were):
    ``encoder_layers``, ``decoder_layers`` (>= 1, ``dropout`` between layers); ``bidirectional``
    encoder (each direction hidden_size // 2, hs their concatenation: hidden_size must be even;
    a bridge, linear + tanh, maps the final states to the decoder's, as it does whenever the layer
    counts differ); ``attention`` "dot" | "general" | "additive"; ``input_feeding`` (Luong);
    ``label_smoothing`` eps in [0, 1) in the training loss; ``tie_embeddings`` (the decoder's
    input embedding is also its output projection).
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, wordvec_size: int = 16,
                 hidden_size: int = 256, *, dropout: float = 0.0, init: str = "xavier",
                 dtype="float32", seed: int = 0, pad_id: int = PAD_ID, bos_id: int = BOS_ID,
                 eos_id: int = EOS_ID, **options):
        super().__init__()
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}")
        for name, v in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size),
                        ("wordvec_size", wordvec_size), ("hidden_size", hidden_size)):
            _check_count(name, v)
        o = _checked_options(options, hidden_size)
        rng = np.random.default_rng(seed)
        kw = dict(rng=rng, init=init, dtype=dtype, dropout=dropout)
        self.add_module("encoder", Encoder(src_vocab_size, wordvec_size, hidden_size, layers=o["encoder_layers"],
                                           bidirectional=o["bidirectional"], decoder_layers=o["decoder_layers"], **kw))
        self.add_module("decoder", AttentionDecoder(tgt_vocab_size, wordvec_size, hidden_size,
                                                    layers=o["decoder_layers"], attention=o["attention"],
                                                    input_feeding=o["input_feeding"],
                                                    tie_embeddings=o["tie_embeddings"], **kw))
        self.add_module("loss_layer", SoftmaxCrossEntropy(ignore_index=pad_id, smoothing=o["label_smoothing"]))
        self.config = dict(src_vocab_size=int(src_vocab_size), tgt_vocab_size=int(tgt_vocab_size),
                           wordvec_size=int(wordvec_size), hidden_size=int(hidden_size),
                           dropout=float(dropout), init=init, dtype=dtype.name, seed=int(seed),
                           pad_id=pad_id, bos_id=bos_id, eos_id=eos_id, **o)
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
        """src (N, Ts) -> hs (N, Ts, H), the decoding state (h, c), mask (N, Ts) on the model's device.

        The state is (N, H) each for the book's decoder, else stacked rows (see ``decoders``)."""
        src, mask, lengths = self._prepare_src(src)
        hs, state = self.encoder.forward(src, lengths)
        return hs, self.decoder.initial_state(state), mask

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

        ids hold ``pad_id`` after each row's eos. ``max_len`` (tokens, or an ``OutputLengthRule``) defaults
        to the model's ``output_len_rule`` (set from config.json by ``load_checkpoint``), else 2 * Ts + 10:
        see ``attnseq.run.decoding.output_limit``; the search itself is ``greedy_batch`` there.
        """
        from ..run.decoding import greedy_batch                     # here, not at the top: run/ imports nn/
        return greedy_batch(self, src, max_len)
