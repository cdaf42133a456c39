"""Translating with an export directory in onnxruntime, with attnseq's own search code.

``OnnxSeq2seq`` holds the two graphs in onnxruntime sessions and is an engine of the searches in
``attnseq.nn.search``: ``encode`` (the encoder graph), ``step_fn`` (the decoder-step graph as
``step(tokens (N,), state) -> log_probs (N, V), state, attention (N, Ts)``, the state being the
manifest's ``decoder_state`` arrays, (h, c) or (h, c, feed) (a GRU's: (h,) or (h, feed)), kept
batch-first for the searches to reorder: (N, H), or (N, L, H) for the graphs' (L, N, H)) and
``start``, both for a batch.
``OnnxExport`` loads and checks a directory (manifest keys, file sizes and checksums, the graphs'
inputs and outputs, the tokenizers); ``OnnxTranslator`` over one or several (an ensemble) is a
``TranslatorBase``: tokenization, truncation, source reversal, blank in -> blank out, every search
(greedy, beam, sampling, scoring, prefixes, guards, ensembles) and the ``Translation`` objects are the
same code as ``attnseq.run.inference.Translator``'s; only encoding and stepping differ.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..data.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, load_tokenizer
from ..errors import CheckpointError, ConfigError
from ..nn.output_length import LEGACY_RULE, OutputLengthRule
from ..nn.search import beam_search_core, greedy_search
from ..run.ensembles import Member, check_members, make_engine
from ..run.inference import TranslatorBase
from .spec import (DECODER_STEP, ENCODER, GRAPH_FILES, MANIFEST, ORT_TYPES, TOKENIZER_NAMES, decoder_state,
                   read_listed_file, read_manifest, read_rule, require)


def _batch_first(x):
    """A state array as the graphs give it, (N, H) or (L, N, H) -> batch first, (N, H) or (N, L, H) (a view)."""
    return x if x.ndim == 2 else x.transpose(1, 0, 2)


def _layer_first(x):
    """The inverse of ``_batch_first``, contiguous, as onnxruntime takes it."""
    return x if x.ndim == 2 else np.ascontiguousarray(x.transpose(1, 0, 2))


def _session(ort, data: bytes, path: Path, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3                                     # errors only
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({first})") from None


class OnnxSeq2seq:
    """encoder.onnx and decoder_step.onnx in onnxruntime sessions (float32, CPU).

    ``names`` are the paths used in error messages; ``threads`` is onnxruntime's intra-op
    thread count (0: its default, one per core). The sessions may run from several threads at once,
    so for ``decoding.map_rows``, which gives each thread a replica of the model, a replica is this
    object itself; and the graphs are inference-only, so ``eval_mode`` has nothing to switch.
    """
    xp = np

    def __init__(self, encoder: bytes, decoder_step: bytes, pad_id: int = PAD_ID, bos_id: int = BOS_ID,
                 eos_id: int = EOS_ID, threads: int = 1, names: dict | None = None, state: list | None = None,
                 output_len_rule: OutputLengthRule = LEGACY_RULE):
        ort = require("onnxruntime")
        self.output_len_rule = output_len_rule                      # the longest output (the manifest's rule)
        names = names or {g: Path(f) for g, f in GRAPH_FILES.items()}
        self.names = names
        self.encoder = _session(ort, encoder, names[ENCODER], threads)
        self.decoder = _session(ort, decoder_step, names[DECODER_STEP], threads)
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.encoder_outputs = [o.name for o in self.encoder.get_outputs()]
        step_inputs = {i.name for i in self.decoder.get_inputs()}
        # the manifest's decoder_state, else read off the graph: input feeding adds "feed", a GRU has no "c"
        self.state = state or decoder_state({"input_feeding": "feed" in step_inputs,
                                             "cell": "lstm" if "c" in step_inputs else "gru"})
        self.memory = [n for n in self.encoder_outputs if n in step_inputs]   # hs, and the keys
        self.step_outputs = ["log_probs"] + [s["output"] for s in self.state] + ["attention"]

    def replica(self) -> "OnnxSeq2seq":
        return self

    def eval_mode(self):
        return contextlib.nullcontext()

    def check_io(self, graphs: dict) -> None:
        """The sessions' inputs and outputs (names, types, shapes) must be the manifest's ``graphs``."""
        for g, sess in ((ENCODER, self.encoder), (DECODER_STEP, self.decoder)):
            for side, args in (("inputs", sess.get_inputs()), ("outputs", sess.get_outputs())):
                got = [(a.name, a.type, list(a.shape)) for a in args]
                want = [(e["name"], ORT_TYPES.get(e["dtype"], e["dtype"]), e["shape"]) for e in graphs[g][side]]
                if got != want:
                    raise CheckpointError(f"{self.names[g]}: {side} are {got}, but {MANIFEST} says {want}")

    def encode(self, src):
        """src (N, Ts) ids, right-padded -> memory {"hs": (N, Ts, H), ["keys": (N, Ts, H)]}, the start
        state (batch first: (h, c) or (h, c, feed); a GRU's without c), mask (N, Ts) True at real tokens."""
        src = np.ascontiguousarray(src, dtype=np.int64)
        mask = src != self.pad_id                                   # (N, Ts)
        lengths = mask.sum(axis=1)                                  # (N,)
        out = dict(zip(self.encoder_outputs, self.encoder.run(self.encoder_outputs,
                                                               {"src_ids": src, "src_lengths": lengths})))
        state = tuple(_batch_first(out[s["initial"]]) for s in self.state)
        return {k: out[k] for k in self.memory}, state, mask

    def step_fn(self, memory, mask):
        """The decoder-step graph over ``memory`` (from ``encode``), mask (N, Ts) as a step function for
        ``greedy_search``/``beam_search_core``: step(tokens (N,), state) -> log_probs (N, V), state, a (N, Ts)."""
        run, names = self.decoder.run, self.step_outputs
        inputs = [s["input"] for s in self.state]
        feed = {k: np.ascontiguousarray(v) for k, v in memory.items()}
        feed["src_mask"] = np.ascontiguousarray(mask)

        def step(tokens, state):
            feed["prev_token"] = tokens
            feed.update((name, _layer_first(s)) for name, s in zip(inputs, state))
            logp, *new, a = run(names, feed)
            return logp, tuple(_batch_first(s) for s in new), a
        return step

    def start(self, src, k: int = 1, log_probs: bool = True):
        """Where a search starts (an engine of ``attnseq.nn.search``): a batch src (N, Ts) -> the step function
        (log-probabilities: the graph gives nothing else, so ``log_probs`` is moot) and the start state, with
        k adjacent rows per source, the memory and mask repeated to match."""
        memory, state, mask = self.encode(src)
        if k > 1:
            memory = {name: np.repeat(m, k, axis=0) for name, m in memory.items()}         # (N*k, Ts, H)
            mask = np.repeat(mask, k, axis=0)
            state = tuple(np.repeat(s, k, axis=0) for s in state)                       # (N*k, ...)
        return self.step_fn(memory, mask), state

    def greedy(self, src, max_len: int):
        """Greedy decoding of one batch src (N, Ts) -> ids (N, L) (pad after eos), weights (N, L, Ts)."""
        N, Ts = src.shape
        return greedy_search(*self.start(src), N, Ts, self.bos_id, self.eos_id, max_len, self.pad_id)

    def beam(self, src, beam_size: int, alpha: float, max_len: int, n_best: int):
        """Beam search on one batch src (N, Ts) -> per row its ``n_best`` Hypothesis, best first."""
        N, Ts = src.shape
        return beam_search_core(*self.start(src, beam_size), N, Ts, self.bos_id, self.eos_id, beam_size, alpha,
                                max_len, n_best, np)


class OnnxExport:
    """One export directory, loaded and checked: manifest keys, file sizes and checksums, the special ids,
    the graphs' inputs and outputs (``graphs``, an ``OnnxSeq2seq`` holding the manifest's output-length
    rule) and the tokenizers."""

    def __init__(self, directory: str | Path):
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such export directory")
        self.directory = d
        self.manifest = m = read_manifest(d)
        data = {name: read_listed_file(d, m, name) for name in m["files"]}
        self._check_special_ids()
        self.graphs = OnnxSeq2seq(data[GRAPH_FILES[ENCODER]], data[GRAPH_FILES[DECODER_STEP]], threads=1,
                                  names={g: d / f for g, f in GRAPH_FILES.items()}, state=m["decoder_state"])
        self.graphs.check_io(m["graphs"])                           # the graphs first: they are what runs
        self.src_tok, self.tgt_tok = (self._tokenizer(side) for side in ("source", "target"))
        # the longest output: the checkpoint's rule at export (or export's --max-output-len)
        self.graphs.output_len_rule = read_rule(m, d / MANIFEST)

    def _check_special_ids(self) -> None:
        ids = self.manifest["special_ids"]
        want = dict(pad=PAD_ID, bos=BOS_ID, eos=EOS_ID, unk=UNK_ID)
        if ids != want:
            raise CheckpointError(f"{self.directory / MANIFEST}: special_ids {ids}; attnseq's tokenizers use {want}")

    def _tokenizer(self, side: str):
        m, path = self.manifest, self.directory / MANIFEST
        spec = m["tokenizers"][side]
        tok = load_tokenizer(self.directory, TOKENIZER_NAMES[side])
        if tok.kind != spec["kind"]:
            raise CheckpointError(f"{path}: the {side} tokenizer is {tok.kind!r}, the manifest says {spec['kind']!r}")
        key = "src_vocab_size" if side == "source" else "tgt_vocab_size"
        if tok.vocab_size != m["model"][key]:
            raise CheckpointError(f"{path}: model.{key} is {m['model'][key]}, but the {side} tokenizer "
                                  f"has {tok.vocab_size} entries")
        return tok


class OnnxTranslator(TranslatorBase):
    """Texts in, ``Translation``s out, from an export directory (see ``attnseq.export.export_onnx``), or from a
    list of them: an ensemble (``ensemble_mode`` linear | log_linear, ``weights`` one per member).

    Everything but running the model is ``TranslatorBase``'s, shared with attnseq's ``Translator``: every
    search, sampling, prefixes, guards and ensembles run the same code over the graphs' step function.
    As attnseq does on a CPU, length-sorted batches are spread over ``threads`` (0: one per core)
    by ``decoding.map_rows``, each batch running single-threaded: for decoder steps this small,
    that beats onnxruntime's own intra-op threads, whose hand-offs cost more than one step's work.
    """

    def __init__(self, directory, max_input_len: int | None = None, threads: int = 0,
                 ensemble_mode: str = "linear", weights=None):
        given = list(directory) if isinstance(directory, (list, tuple)) else [directory]
        exports = [OnnxExport(d) for d in given]
        if not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"threads must be 0 (one per core) or a positive integer, got {threads!r}")
        check_members([Member(str(g), e.directory, e.src_tok, e.tgt_tok, e.manifest["reverse_source"])
                       for g, e in zip(given, exports)])
        first = exports[0]
        self.exports, self.threads = exports, threads
        self.directory, self.manifest, self.graphs = first.directory, first.manifest, first.graphs
        self.output_rule: OutputLengthRule = first.graphs.output_len_rule
        self.engine = make_engine([e.graphs for e in exports], weights, ensemble_mode)
        self.src_tok, self.tgt_tok = first.src_tok, first.tgt_tok
        self.reverse = first.manifest["reverse_source"]
        self.max_input_len = max_input_len or min(e.manifest["max_input_len"] for e in exports)
