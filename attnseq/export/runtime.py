"""Translating with an export directory in onnxruntime, with attnseq's own search code.

``OnnxSeq2seq`` holds the two graphs in onnxruntime sessions and gives what the searches in
``attnseq.nn.search`` take: ``encode`` (the encoder graph) and ``step_fn`` (the decoder-step
graph as ``step(tokens (N,), state) -> log_probs (N, V), state, attention (N, Ts)``, the state
being the manifest's ``decoder_state`` arrays, (h, c) or (h, c, feed) (a GRU's: (h,) or (h, feed)),
kept batch-first for the searches to reorder: (N, H), or (N, L, H) for the graphs' (L, N, H)).
``OnnxTranslator`` loads and checks a directory (manifest keys, file sizes and checksums, the
graphs' inputs and outputs, the tokenizers) and is a ``TranslatorBase``: tokenization,
truncation, source reversal, blank in -> blank out and the ``Translation`` objects are the
same code as ``attnseq.run.inference.Translator``'s; only encoding and stepping differ.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..data.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, load_tokenizer
from ..errors import CheckpointError, ConfigError
from ..nn.output_length import OutputLengthRule, output_limit
from ..nn.search import beam_search_core, greedy_search
from ..run.decoding import map_rows, output_length
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
                 eos_id: int = EOS_ID, threads: int = 1, names: dict | None = None, state: list | None = None):
        ort = require("onnxruntime")
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

    def teacher_forced_probs(self, src, tgt) -> np.ndarray:
        """src (N, Ts), tgt (N, L + 1) = [bos, y1 .. yL] right-padded -> (N, L): the probability of
        each y_t after bos, y1 .. y_t-1 (entries past a row's length are for its padding)."""
        memory, state, mask = self.encode(src)
        step = self.step_fn(memory, mask)
        tgt = np.asarray(tgt, dtype=np.int64)
        probs = np.empty((len(tgt), tgt.shape[1] - 1))
        for t in range(tgt.shape[1] - 1):
            logp, state, _ = step(tgt[:, t], state)                 # (N, V)
            probs[:, t] = np.exp(np.take_along_axis(logp, tgt[:, t + 1, None], axis=1)[:, 0])
        return probs

    def greedy(self, src, max_len: int):
        """Greedy decoding of one batch src (N, Ts) -> ids (N, L) (pad after eos), weights (N, L, Ts)."""
        memory, state, mask = self.encode(src)
        N, Ts = mask.shape
        return greedy_search(self.step_fn(memory, mask), state, N, Ts, self.bos_id, self.eos_id, max_len, self.pad_id)

    def beam(self, src, beam_size: int, alpha: float, max_len: int, n_best: int):
        """Beam search on one batch src (N, Ts) -> per row its ``n_best`` Hypothesis, best first."""
        memory, state, mask = self.encode(src)
        N, Ts = mask.shape
        k = beam_size
        step = self.step_fn({name: np.repeat(m, k, axis=0) for name, m in memory.items()},
                            np.repeat(mask, k, axis=0))                             # (N*k, Ts, H)
        state = tuple(np.repeat(s, k, axis=0) for s in state)                       # (N*k, ...)
        return beam_search_core(step, state, N, Ts, self.bos_id, self.eos_id, k, alpha, max_len, n_best, np)


class OnnxTranslator(TranslatorBase):
    """Texts in, ``Translation``s out, from an export directory (see ``attnseq.export.export_onnx``).

    Everything but running the model is ``TranslatorBase``'s, shared with attnseq's ``Translator``.
    As attnseq does on a CPU, length-sorted batches are spread over ``threads`` (0: one per core)
    by ``decoding.map_rows``, each batch running single-threaded: for decoder steps this small,
    that beats onnxruntime's own intra-op threads, whose hand-offs cost more than one step's work.
    """

    def __init__(self, directory: str | Path, max_input_len: int | None = None, threads: int = 0):
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such export directory")
        self.directory = d
        self.manifest = m = read_manifest(d)
        data = {name: read_listed_file(d, m, name) for name in m["files"]}
        self._check_special_ids()
        if not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"threads must be 0 (one per core) or a positive integer, got {threads!r}")
        self.threads = threads
        self.graphs = OnnxSeq2seq(data[GRAPH_FILES[ENCODER]], data[GRAPH_FILES[DECODER_STEP]], threads=1,
                                  names={g: d / f for g, f in GRAPH_FILES.items()}, state=m["decoder_state"])
        self.graphs.check_io(m["graphs"])                           # the graphs first: they are what runs
        self.src_tok, self.tgt_tok = (self._tokenizer(side) for side in ("source", "target"))
        self.reverse = m["reverse_source"]
        self.max_input_len = max_input_len or m["max_input_len"]
        # the longest output: the checkpoint's rule at export (or export's --max-output-len)
        self.output_rule: OutputLengthRule = read_rule(m, d / MANIFEST)

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

    def greedy_rows(self, src, src_len, batch_size, max_len):
        eos = self.graphs.eos_id

        def run(graphs, idx):
            ts = int(src_len[idx].max())
            ids, w = graphs.greedy(src[idx, :ts], output_limit(ts, max_len, self.output_rule))  # (B, L), (B, L, ts)
            ends = [output_length(row_ids, eos) for row_ids in ids]
            return [(ids[k, :n], w[k, :n, :int(src_len[row])]) for k, (row, n) in enumerate(zip(idx, ends))]

        rows = map_rows(self.graphs, run, src_len, batch_size, self.threads)
        return [ids for ids, _ in rows], [w for _, w in rows]

    def beam_rows(self, src, src_len, beam, alpha, max_len, n_best, batch_size):
        def run(graphs, idx):
            ts = int(src_len[idx].max())
            return graphs.beam(src[idx, :ts], beam, alpha, output_limit(ts, max_len, self.output_rule), n_best)

        return map_rows(self.graphs, run, src_len, batch_size, self.threads)

    def teacher_forced_probs(self, src, tgt):
        return self.graphs.teacher_forced_probs(src, tgt)
