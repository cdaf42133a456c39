"""An attention explorer: one self-contained HTML page to browse a model's outputs, errors and attention.

``explore(model_or_ckpt, sources, references=None)`` translates the sources and returns an
``Exploration``: in a notebook it shows itself inline (``_repr_html_``, the page in an iframe);
``.save(path)`` writes the page; ``attnseq explore`` is ``explore_file`` plus ``save``.

The page (``page.html`` beside this file, filled in by ``Exploration.html``) needs no server and no
network: its CSS and JS are inline (the heatmap's drawing code is ``heatmap.html``, which ``page_template``
puts into this page and into ``attnseq serve``'s), and the examples are one JSON block,
``<script type="application/json" id="attnseq-data">``, shaped so::

    {"version": 1, "title": str, "meta": str, "beam": int, "search": "greedy" | "beam" | "sample",
     "summary": {"n", "exact_match", "bleu", "chrf", "wrong"},        # null without references
     "categories": {name: {label: {"n", "exact_match", "bleu", "chrf"}}},
     "examples": [{"src": str, "ref": str | null, "ref_norm": str | null, "correct": bool | null,
                   "cats": {name: label}, "src_tokens": [str],
                   "hyps": [{"text": str, "tokens": [str], "probs": [float], "score": float,
                             "logprob": float, "correct": bool | null, "w": [[offset, v, ...]]}],
                   "ref_scored": {"text", "tokens", "probs", "score", "logprob", "w"} | null}]}

``hyps[0]`` is the model's output (greedy, the best of the beam, or the best of the samples), the rest the
n best (or the other samples) after it. ``ref_scored`` is the reference as the model reads it, teacher
forced (``attnseq score``): its tokens' probabilities and the attention over the source for each, shaped as
a hypothesis (score = log-probability); the page's toggle shows it beside the model's output.
``probs`` are each output token's probability (4 decimals); ``score`` is the beam's score, or for greedy
the log-probability. ``w`` holds the attention (len(tokens), len(src_tokens)) row by row in thousandths
(integers, so 3 decimals), each row as its first nonzero column then the values up to its last nonzero
one: a row [3, 20, 950, 30] is 0.02, 0.95, 0.03 at columns 3-5 and zero elsewhere. That keeps a page of
1,000 date examples near 1 MB. ``correct`` compares the output with the reference as the target
tokenizer reads it back (``ref_norm``), as ``attnseq eval`` does. A page of a run's tracked examples
(``explorer.history.explore_history``, ``attnseq explore --history``) also holds their attention across
training, for its epoch slider: the "history" keys described there.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..data.io import atomic_write_text, read_columns
from ..run.checkpoint import Checkpoint
from ..run.decoding import EVAL_BATCH_SIZE
from ..run.evaluation import bleu_chrf, by_column, category_metrics, length_bucket, normalized_refs
from ..run.inference import as_translator

FORMAT_VERSION = 1
DATA_ID = "attnseq-data"
HEATMAP_PLACE = "__ATTNSEQ_HEATMAP__"      # where a page template takes the shared heatmap piece


def page_template(package: str, name: str) -> str:
    """The page template ``name`` of ``package`` with the heatmap's CSS and JS (``heatmap.html``, one
    ``AttnHeatmap`` global) put in its place: the explorer's page and ``attnseq serve``'s draw with it."""
    piece = resources.files(__package__).joinpath("heatmap.html").read_text(encoding="utf-8")
    return resources.files(package).joinpath(name).read_text(encoding="utf-8").replace(HEATMAP_PLACE, piece)


@dataclass
class Exploration:
    """The explorer's data (the JSON the page embeds) and the page made from it."""
    data: dict

    def html(self) -> str:
        """The whole page: the template with the title and the JSON block filled in."""
        template = page_template(__package__, "page.html")
        return (template.replace("__ATTNSEQ_TITLE__", html.escape(self.data["title"]))
                .replace("__ATTNSEQ_DATA__", embed_json(self.data)))

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (atomically) and return the path."""
        path = Path(path)
        atomic_write_text(path, self.html())
        return path

    def _repr_html_(self) -> str:
        """The page in an iframe, so its styles and keys stay out of the notebook's."""
        return (f'<iframe srcdoc="{html.escape(self.html(), quote=True)}" '
                'style="width: 100%; height: 680px; border: 1px solid #ddd;"></iframe>')


def embed_json(data: dict) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' that could end it or open a comment."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def read_embedded(page: str) -> dict:
    """The JSON block of a page written by ``Exploration.html`` (for tests and tools)."""
    start = page.index(f'<script type="application/json" id="{DATA_ID}">')
    start = page.index(">", start) + 1
    return json.loads(page[start:page.index("</script>", start)])


def sparse_rows(weights: np.ndarray) -> list[list[int]]:
    """Attention (L, Ts) as rows of thousandths, each [first nonzero column, values ... up to the last]."""
    rows = []
    for row in np.rint(np.asarray(weights, dtype=np.float64) * 1000).astype(np.int64):
        nz = np.flatnonzero(row)
        rows.append([int(nz[0])] + row[nz[0]:nz[-1] + 1].tolist() if nz.size else [0])
    return rows


def _reference(scored) -> dict:
    """The reference as scored (``run.scoring.Scored``), shaped as a hypothesis for the page."""
    return dict(text=None, tokens=list(scored.tokens), probs=[round(float(p), 4) for p in np.exp(scored.token_logprobs)],
                score=round(scored.logprob, 6), logprob=round(scored.logprob, 6), correct=None,
                w=sparse_rows(scored.weights))


def _hypothesis(cand, ref_norm: str | None) -> dict:
    logprob = float(np.log(np.maximum(cand.probs, 1e-300)).sum())
    return dict(text=cand.text, tokens=list(cand.out_tokens), probs=[round(float(p), 4) for p in cand.probs],
                score=round(logprob if cand.score is None else float(cand.score), 6), logprob=round(logprob, 6),
                correct=None if ref_norm is None else cand.text == ref_norm, w=sparse_rows(cand.weights))


def explore(model_or_ckpt, sources: list[str], references: list[str] | None = None,
            categories: dict[str, list[str]] | None = None, *, beam: int = 1, n_best: int | None = None,
            alpha: float = 0.0, device: str = "cpu", batch_size: int = EVAL_BATCH_SIZE,
            title: str | None = None, meta: str = "", max_len=None, ensemble_mode: str = "linear", weights=None,
            **decoding) -> Exploration:
    """Translate ``sources`` and gather what the explorer page shows.

    ``model_or_ckpt``: a run or checkpoint directory, a loaded ``Checkpoint``, a list of them (an ensemble:
    ``ensemble_mode``, ``weights``) or a ``Translator`` (any ``TranslatorBase``: an ONNX export's too).
    ``references``: the wanted outputs (then each example is marked right or wrong, the summary has
    exact match, BLEU and chrF, and each reference is scored by the model, with its attention, for the
    page's "the reference, scored" view). ``categories``: {name: one label per source}, shown per example
    and, with references, as a table of metrics per label; the source length bucket ("length") is always there.
    ``beam`` > 1 searches with a beam and keeps the ``n_best`` (default: all ``beam``) hypotheses.
    ``max_len``: the longest output, tokens or an ``OutputLengthRule`` (None: the model's own rule).
    ``decoding``: the other search keywords of ``TranslatorBase.translate`` (sample, temperature, top_k, top_p,
    seed, min_output_len, no_repeat_ngram, repetition_penalty).
    """
    sources = list(sources)
    given_lists = {"references": references, **{f"categories[{n!r}]": v for n, v in (categories or {}).items()}}
    for name, given in given_lists.items():
        if given is not None and len(given) != len(sources):
            raise ValueError(f"{name}: {len(given)} given for {len(sources)} sources")
    tr = as_translator(model_or_ckpt, device, ensemble_mode=ensemble_mode, weights=weights)
    found = tr.translate(sources, beam=beam, n_best=n_best or beam, alpha=alpha, batch_size=batch_size,
                         max_len=max_len, details=True, **decoding)
    refs_norm = None if references is None else normalized_refs(tr.tgt_tok, references)
    scored = None if references is None else tr.score(sources, references, alpha=0.0, batch_size=batch_size)
    labels = {"length": [length_bucket(len(t.src_tokens)) for t in found], **(categories or {})}
    examples = []
    for k, (src, t) in enumerate(zip(sources, found)):
        ref_norm = None if refs_norm is None else refs_norm[k]
        hyps = [_hypothesis(c, ref_norm) for c in t.candidates]
        examples.append(dict(src=src, ref=None if references is None else references[k], ref_norm=ref_norm,
                             correct=hyps[0]["correct"], cats={n: v[k] for n, v in labels.items()},
                             src_tokens=list(t.src_tokens), hyps=hyps,
                             ref_scored=None if scored is None else {**_reference(scored[k]), "text": ref_norm}))
    search = "sample" if decoding.get("sample") else "beam" if beam > 1 else "greedy"
    data = dict(version=FORMAT_VERSION, title=title or "attnseq explorer", meta=meta, beam=int(beam), search=search,
                summary=_summary([t.text for t in found], references, refs_norm), categories={}, examples=examples)
    if references is not None:
        preds = [t.text for t in found]
        data["categories"] = {n: category_metrics(preds, references, v, refs_norm) for n, v in labels.items()}
    return Exploration(data)


def _summary(preds: list[str], refs: list[str] | None, refs_norm: list[str] | None) -> dict:
    if refs is None or not refs:
        return dict(n=len(preds), exact_match=None, bleu=None, chrf=None, wrong=None)
    right = sum(p == r for p, r in zip(preds, refs_norm))
    scores = bleu_chrf(preds, refs)
    return dict(n=len(preds), exact_match=right / len(preds), wrong=len(preds) - right,
                **{k: v if math.isfinite(v) else 0.0 for k, v in scores.items()})


def explore_file(ckpt, data: str | Path, n: int | None = 500, by: tuple[str, ...] = (), beam: int = 1,
                 n_best: int | None = None, alpha: float = 0.0, device: str = "cpu",
                 batch_size: int = EVAL_BATCH_SIZE, title: str | None = None, max_len=None,
                 ensemble_mode: str = "linear", weights=None, **decoding) -> Exploration:
    """``explore`` on the first ``n`` pairs (all with None) of a TSV/question_answer file, with the
    categories ``by`` names (``style``, ``colN``: ``evaluation.by_column``; length is always shown).
    ``ckpt``: one run or checkpoint, or a list (an ensemble); ``decoding``: as ``explore``'s."""
    if n is not None and n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    columns = {name: by_column(name) for name in by if name != "length"}
    pairs, extra = read_columns(data, list(columns.values()))
    total = len(pairs)
    pairs, extra = pairs[:n], extra[:n]
    categories = {name: [fields[k] for fields in extra] for k, name in enumerate(columns)}
    search = "sampling" if decoding.get("sample") else f"beam {beam}" if beam > 1 else "greedy"
    names = [str(c) for c in ckpt] if isinstance(ckpt, (list, tuple)) else [str(ckpt)]
    model = names[0] if len(names) == 1 else f"ensemble ({ensemble_mode}) of {', '.join(names)}"
    meta = f"model {model} · data {data} ({len(pairs)} of {total} pairs) · {search}"
    return explore(ckpt, [s for s, _ in pairs], [t for _, t in pairs], categories, beam=beam, n_best=n_best,
                   alpha=alpha, device=device, batch_size=batch_size, max_len=max_len, ensemble_mode=ensemble_mode,
                   weights=weights, title=title or f"attnseq explorer: {Path(names[0]).name} on {Path(str(data)).name}",
                   meta=meta, **decoding)
