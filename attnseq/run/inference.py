"""Using a trained checkpoint: translate text, score given pairs, evaluate a data file.

``Translator`` wraps a checkpoint (or an ensemble of them) with its tokenizers: texts in, texts out,
with the attention weights of each chosen output; what does not depend on the engine that runs the
model is in ``TranslatorBase``, which ``attnseq.export``'s onnxruntime translator shares: every search
(greedy, beam, sampling, with prefixes and guards) and ``score``, through ``attnseq.nn.search``.
``attnseq translate``, ``attnseq score``, ``attnseq eval`` and ``attnseq plot-attention`` (in ``cli``)
are thin layers over these; ``translate`` and ``score`` here are ``attnseq.translate`` and ``attnseq.score``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.batching import encode_pairs, encode_sources, pad_rows
from ..data.io import atomic_write_text, read_columns
from ..data.tokenizers import BOS_ID, UNK_ID, Tokenizer
from ..nn.output_length import output_limit
from ..nn.search import Decoding, Guards, Hypothesis, Sampling, run_forced, run_search
from .checkpoint import Checkpoint, load_checkpoint
from .decoding import EVAL_BATCH_SIZE, map_rows
from .ensembles import Member, check_members, make_engine
from .evaluation import by_column, category_metrics, evaluate, length_bucket, normalized_refs
from .scoring import Scored, score_texts

DEFAULT_MAX_INPUT = 200


@dataclass
class Candidate:
    """One output of a search (``translate(details=True)``): the greedy one, or one of the n best."""
    text: str
    out_tokens: list            # output pieces, ending in <eos> when the model finished
    weights: np.ndarray         # (len(out_tokens), len(src_tokens)) attention
    score: float | None         # log-probability over the length penalty (beam, sampling); None for greedy
    probs: np.ndarray           # (len(out_tokens),) the model's probability of each output token


@dataclass
class Translation:
    text: str                   # the best output
    src_tokens: list            # source pieces as the model saw them (before any reversal)
    out_tokens: list            # output pieces, ending in <eos> when the model finished
    weights: np.ndarray         # (len(out_tokens), len(src_tokens)) attention
    nbest: list                 # [(text, score)] best first (beam search, samples), or [(text, None)] (greedy)
    probs: np.ndarray | None = None                          # (len(out_tokens),), with details=True
    candidates: list[Candidate] = field(default_factory=list)  # every n-best output, with details=True


class TranslatorBase:
    """Texts in, ``Translation``s out, whatever runs the model: what every engine shares.

    Here: tokenization, truncation to ``max_input_len``, source reversal, blank in -> blank out, target
    prefixes, chunks of rows, the assembly of each Translation, and every search over length-sorted batches
    on threads (``search_rows``, ``forced_rows``) through ``attnseq.nn.search``. An engine's translator
    (``Translator`` for attnseq's own model, ``attnseq.export.OnnxTranslator`` for an ONNX export, either over
    an ensemble) sets ``engine`` (what the searches start from: a model, an ``OnnxSeq2seq`` or an
    ``Ensemble``, see ``attnseq.nn.search.ensemble``), ``src_tok``, ``tgt_tok``, ``reverse``, ``max_input_len``
    and ``threads`` (0: one per core).
    """
    engine: object
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    reverse: bool
    max_input_len: int
    threads: int = 0

    def search_rows(self, src, src_len, decoding: Decoding, max_len, batch_size: int, prefixes: list | None = None,
                    rng: np.random.Generator | None = None) -> list[list[Hypothesis]]:
        """Search every row of a right-padded source matrix src (M, Ts) with real lengths src_len (M,), in
        length-sorted batches over threads -> per row its hypotheses, best first, weights (L, src_len[i]).
        ``max_len``: tokens or an ``OutputLengthRule`` of each batch's longest source; None: the engine's rule.
        ``prefixes``: per row target ids to start with (or None). ``rng``: sampling's generator; each batch
        draws from its own, seeded from it and the batch's first row, so threads do not change the samples."""
        base = None if rng is None else int(rng.integers(2 ** 63))

        def run(engine, idx):
            ts = int(src_len[idx].max())
            gen = None if base is None else np.random.default_rng([base, int(idx.min())])
            found = run_search(engine, src[idx, :ts], output_limit(ts, max_len, engine.output_len_rule), decoding,
                               None if prefixes is None else [prefixes[i] for i in idx], gen)
            return [[replace(h, weights=h.weights[:, :int(src_len[row])]) for h in hyps] for row, hyps in zip(idx, found)]
        return map_rows(self.engine, run, src_len, batch_size, self.threads)

    def forced_rows(self, rows: list[list[int]], outputs: list, batch_size: int = EVAL_BATCH_SIZE) -> list[tuple]:
        """Teacher forcing in length-sorted batches over threads: source ids ``rows[i]`` (as fed to the encoder)
        and target ids ``outputs[i]`` (eos included) -> per row (token log-probabilities (L,) float64, attention
        (L, len(rows[i])))."""
        src, src_len = pad_rows(rows)

        def run(engine, idx):
            tgt, tgt_len = pad_rows([[BOS_ID, *map(int, outputs[i])] for i in idx])
            logp, w = run_forced(engine, src[idx, :int(src_len[idx].max())], tgt)
            return [(logp[j, :n - 1], w[j, :n - 1, :int(src_len[row])]) for j, (row, n) in enumerate(zip(idx, tgt_len))]
        return map_rows(self.engine, run, src_len, batch_size, self.threads)

    def teacher_forced_probs(self, src, tgt) -> np.ndarray:
        """src (B, Ts) source ids, tgt (B, L + 1) = [bos, y1 .. yL], both right-padded -> (B, L) numpy: the
        model's probability of each y_t after bos, y1 .. y_t-1 (entries past a row's length are padding's)."""
        with self.engine.eval_mode():
            return np.exp(run_forced(self.engine, src, tgt)[0])

    def token_probs(self, rows: list[list[int]], outputs: list, batch_size: int = EVAL_BATCH_SIZE) -> list[np.ndarray]:
        """The model's probability of each token of ``outputs[i]`` (ids, eos included) after the ones
        before it, given source ids ``rows[i]`` (as fed to the encoder) -> float64 arrays (len(outputs[i]),)."""
        out = []
        for start in range(0, len(rows), batch_size):
            src, _ = pad_rows(rows[start:start + batch_size])                                   # (B, Ts)
            tgt, tgt_len = pad_rows([[BOS_ID, *map(int, o)] for o in outputs[start:start + batch_size]])
            p = self.teacher_forced_probs(src, tgt)                                             # (B, L)
            out += [p[b, :n - 1].astype(np.float64) for b, n in enumerate(tgt_len)]
        return out

    def translate(self, texts: list[str], beam: int = 1, n_best: int = 1, alpha: float = 0.0,
                  batch_size: int = EVAL_BATCH_SIZE, max_len=None, first_line: int = 1, details: bool = False,
                  *, sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed=None,
                  min_output_len: int = 0, no_repeat_ngram: int = 0, repetition_penalty: float = 1.0,
                  prefix=None) -> list[Translation]:
        """One Translation per text; greedy unless beam or n_best > 1, or ``sample``. Outputs stop at eos or at
        ``max_len``: tokens, or an ``OutputLengthRule`` of each batch's longest input (``--max-output-len``);
        None: the model's own rule (the checkpoint's, or the export manifest's). With ``details``, each also gets
        its tokens' probabilities and its ``candidates`` (one more, teacher-forced, pass).

        ``sample``: draw each token (``temperature``, ``top_k``, ``top_p``), ``n_best`` samples per text, best
        first; ``seed``: an int or a numpy Generator (None: fresh entropy). Guards, off by default:
        ``min_output_len``, ``no_repeat_ngram``, ``repetition_penalty``. ``prefix``: the target text each
        output starts with, one for all texts or one per text (None or "": none); a beam's every hypothesis
        and every sample starts with it.
        """
        decoding = make_decoding(beam, n_best, alpha, sample, temperature, top_k, top_p, seed,
                                 Guards(min_output_len, no_repeat_ngram, repetition_penalty))
        rng = (seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)) if sample else None
        prefixes = self.encode_prefixes(prefix, len(texts), first_line)
        rows = encode_sources(texts, self.src_tok, self.reverse, self.max_input_len, what="input", first_line=first_line)
        blank = [not t.strip() for t in texts]       # blank in, blank out (decoded from a lone <unk>)
        rows = [[UNK_ID] if b else r for b, r in zip(blank, rows)]
        out: list[Translation | None] = [None] * len(texts)
        chunk = batch_size * 8                          # several batches at a time for the threads to share
        for start in range(0, len(rows), chunk):
            idx = np.arange(start, min(start + chunk, len(rows)))
            src, src_len = pad_rows([rows[i] for i in idx])
            found = self.search_rows(src, src_len, decoding, max_len, batch_size,
                                     None if prefixes is None else [prefixes[i] for i in idx], rng)
            hyps = [[(np.array(h.ids), h.weights, h.score) for h in f] for f in found]
            for j, i in enumerate(idx):
                out[i] = self._translation(rows[i], hyps[j], blank[i], details)
            if details:
                self._add_probs([out[i] for i in idx], [rows[i] for i in idx], hyps, batch_size)
        return out

    def _translation(self, row: list[int], hyps: list[tuple], blank: bool, details: bool) -> Translation:
        """One Translation from a row's source ids and its hypotheses [(ids, weights, score)], best first."""
        src_tok, tgt_tok = self.src_tok, self.tgt_tok
        ids, w, _ = hyps[0]
        src_ids = row[::-1] if self.reverse else row
        if self.reverse:
            w = w[:, ::-1]
        nbest = [("" if blank else tgt_tok.decode(h[0]), h[2]) for h in hyps]
        tr = Translation(nbest[0][0], src_tok.pieces(src_ids), tgt_tok.pieces(ids), w, nbest)
        if details:
            tr.candidates = [Candidate(text, tgt_tok.pieces(h[0]), h[1][:, ::-1] if self.reverse else h[1], score, None)
                             for (text, score), h in zip(nbest, hyps)]
        return tr

    def encode_prefixes(self, prefix, n: int, first_line: int = 1) -> list | None:
        """``translate``'s prefix -> per text its target ids, or None when no text has one; a warning names
        the lines whose prefix has text the target vocabulary lacks (it is forced as <unk>)."""
        if prefix is None:
            return None
        texts = [prefix] * n if isinstance(prefix, str) else list(prefix)
        if len(texts) != n:
            raise ValueError(f"prefix: {len(texts)} given for {n} texts")
        bad = [p for p in texts if p is not None and not isinstance(p, str)]
        if bad:
            raise ValueError(f"prefix: expected text or None, got {type(bad[0]).__name__}")
        ids = [self.tgt_tok.encode(p) if p else [] for p in texts]
        unknown = [k for k, i in enumerate(ids, first_line) if UNK_ID in i]
        if unknown:
            warnings.warn(f"prefix of input line {unknown[0]}{' and others' if len(unknown) > 1 else ''}: text the "
                          "target vocabulary lacks, forced as <unk>", stacklevel=3)
        return ids if any(ids) else None

    def score(self, sources: list[str], targets: list[str], alpha: float = 1.0,
              batch_size: int = EVAL_BATCH_SIZE) -> list[Scored]:
        """Each target's log-probability given its source, teacher forced (``attnseq.run.scoring``)."""
        return score_texts(self, sources, targets, alpha, batch_size)

    def _add_probs(self, found: list[Translation], rows: list[list[int]], hyps: list[list[tuple]],
                   batch_size: int) -> None:
        """Fill each candidate's token probabilities (and its Translation's) by teacher forcing the
        candidate's own ids: the decoder then sees what it saw while searching."""
        flat = [(r, h[0]) for r, hs in zip(rows, hyps) for h in hs]
        probs = self.token_probs([r for r, _ in flat], [ids for _, ids in flat], batch_size)
        k = 0
        for tr in found:
            for c in tr.candidates:
                c.probs, k = probs[k], k + 1
            tr.probs = tr.candidates[0].probs


def make_decoding(beam=1, n_best=1, alpha=0.0, sample=False, temperature=1.0, top_k=0, top_p=1.0, seed=None,
                  guards: Guards = Guards()) -> Decoding:
    """``translate``'s keywords as a ``Decoding``; sampling's keywords without ``sample`` are refused."""
    if not sample:
        given = [k for k, v, off in (("temperature", temperature, 1.0), ("top_k", top_k, 0), ("top_p", top_p, 1.0),
                                     ("seed", seed, None)) if v != off]
        if given:
            raise ValueError(f"{given[0]} is for sampling: add sample=True (--sample)")
    return Decoding(beam, alpha, n_best, Sampling(temperature, top_k, top_p) if sample else None, guards)


def _paths(ckpt) -> list:
    return list(ckpt) if isinstance(ckpt, (list, tuple)) else [ckpt]


class Translator(TranslatorBase):
    """Texts in, translations out with a checkpoint's own model (or an ensemble of checkpoints), in batches,
    with greedy or beam search or sampling."""

    def __init__(self, ckpt, device: str = "cpu", max_input_len: int | None = None,
                 ensemble_mode: str = "linear", weights=None):
        """``ckpt``: a run or checkpoint directory, or a ``Checkpoint`` already loaded (``device`` then unused),
        or a list of them: an ensemble (``ensemble_mode`` linear | log_linear, ``weights`` one per member)."""
        given = _paths(ckpt)
        self.checkpoints = [c if isinstance(c, Checkpoint) else load_checkpoint(c, device=device) for c in given]
        self.ck = self.checkpoints[0]
        reverse = [bool(c.config.get("train", {}).get("reverse_source", False)) for c in self.checkpoints]
        check_members([Member(str(g.path if isinstance(g, Checkpoint) else g), c.path, c.src_tok, c.tgt_tok, r)
                       for g, c, r in zip(given, self.checkpoints, reverse)])
        self.model = self.ck.model.eval()
        self.engine = make_engine([c.model.eval() for c in self.checkpoints], weights, ensemble_mode)
        self.src_tok, self.tgt_tok = self.ck.src_tok, self.ck.tgt_tok
        self.reverse = reverse[0]
        self.max_input_len = max_input_len or min(c.config.get("train", {}).get("max_len") or DEFAULT_MAX_INPUT
                                                  for c in self.checkpoints)


def as_translator(model_or_run, device: str = "cpu", **ensemble) -> TranslatorBase:
    """A translator from a run or checkpoint directory, a ``Checkpoint``, a list of them (an ensemble, with
    ``ensemble_mode`` and ``weights``), or a translator already (any ``TranslatorBase``: an ONNX export's too)."""
    if isinstance(model_or_run, TranslatorBase):
        return model_or_run
    if all(isinstance(m, (str, Path, Checkpoint)) for m in _paths(model_or_run)) and _paths(model_or_run):
        return Translator(model_or_run, device, **ensemble)
    raise TypeError("needs a model with its tokenizers: a run or checkpoint directory, a Checkpoint "
                    "(attnseq.run.checkpoint.load_checkpoint), a list of them (an ensemble) or a Translator, "
                    f"not {type(model_or_run).__name__}")


def translate(model_or_run, texts: list[str], *, device: str = "cpu", ensemble_mode: str = "linear", weights=None,
              **decoding) -> list[Translation]:
    """``attnseq.translate``: ``as_translator(model_or_run).translate(texts, **decoding)`` (see
    ``TranslatorBase.translate`` for the keywords: beam, n_best, sample, prefix, guards ...)."""
    return as_translator(model_or_run, device, ensemble_mode=ensemble_mode, weights=weights).translate(texts, **decoding)


def score(model_or_run, sources: list[str], targets: list[str], *, alpha: float = 1.0, device: str = "cpu",
          batch_size: int = EVAL_BATCH_SIZE, ensemble_mode: str = "linear", weights=None) -> list[Scored]:
    """``attnseq.score``: each target's log-probability given its source under the model (or ensemble),
    teacher forced, with per-token log-probabilities and the attention over the target (``Scored``)."""
    tr = as_translator(model_or_run, device, ensemble_mode=ensemble_mode, weights=weights)
    return tr.score(sources, targets, alpha, batch_size)


def evaluate_file(ckpt: str, data: str, device: str = "cpu", batch_size: int = EVAL_BATCH_SIZE,
                  output: str | None = None, by: tuple[str, ...] = (), max_len=None) -> dict:
    """Metrics of a checkpoint on a TSV/question_answer file; BLEU and chrF included. Greedy outputs stop
    at ``max_len`` (tokens or an ``OutputLengthRule``; None: the checkpoint's own rule).

    ``by``: names of categories (``length``, ``style``, ``colN``: see ``evaluation.by_column``); the result
    then also holds ``{"by": {name: {label: {n, exact_match, bleu, chrf}}}}``.
    """
    columns = {name: by_column(name) for name in by}                    # bad names fail before any work
    ck = load_checkpoint(ckpt, device=device)
    reverse = bool(ck.config.get("train", {}).get("reverse_source", False))
    pairs, extra = read_columns(data, [c for c in columns.values() if c is not None])
    enc = encode_pairs(pairs, ck.src_tok, ck.tgt_tok, reverse)
    result = evaluate(ck.model, enc, ck.tgt_tok, batch_size, bleu=True, max_len=max_len)
    preds = result.pop("predictions")
    if output:
        atomic_write_text(output, "".join(p + "\n" for p in preds))
    if by:
        refs = [t for _, t in pairs]
        refs_norm = normalized_refs(ck.tgt_tok, refs)
        labels = category_labels(columns, enc.src_len, extra)
        result["by"] = {name: category_metrics(preds, refs, labels[name], refs_norm) for name in columns}
    return result


def category_labels(columns: dict[str, int | None], src_len, extra: list[tuple]) -> dict[str, list[str]]:
    """Each row's label per category: ``columns`` maps a name to its TSV column (None: length bucket of
    ``src_len``); ``extra`` holds each row's fields in those columns, in the order of the non-None ones."""
    out, k = {}, 0
    for name, col in columns.items():
        if col is None:
            out[name] = [length_bucket(n) for n in src_len]
        else:
            out[name] = [fields[k] for fields in extra]
            k += 1
    return out


def format_alignment(tr: Translation) -> str:
    """A compact text alignment: each output token with the source token it attends to most."""
    if tr.weights.size == 0:
        return "  (empty)"
    lines = []
    for t, piece in enumerate(tr.out_tokens):
        j = int(tr.weights[t].argmax())
        lines.append(f"  {piece!s:>8} <- {tr.src_tokens[j]!s:<8} {tr.weights[t, j]:.2f}")
    return "\n".join(lines)
