"""What ensembles, n-best reranking by ``score`` and filtering by ``score`` are worth on a real corpus:
the figures of README's "Decoding options" section. Not timed (run it beside nothing heavy; no speed here).

    python benchmarks/decoding_quality.py RUN_A RUN_B --data DIR [--ckpt averaged] [--json]

RUN_A, RUN_B: two runs trained on DIR/train.tsv with the same tokenizers (the recipe with seeds 1 and 2);
DIR also holds valid.tsv and test.tsv. Everything that is chosen is chosen on valid.tsv, then test.tsv is
decoded once with what was chosen:

1. ensembles: the ensemble mode (linear or log_linear) by valid beam-5 BLEU; then test BLEU (greedy and
   beam 5) of each run alone and of the two as an ensemble;
2. reranking: run A's beam-5 5-best list, each candidate rescored by the two-model ensemble (``score``);
   the length penalty alpha of that score by valid BLEU of the reranked outputs; then test BLEU of A's beam
   output beside A's 5-best reranked;
3. filtering: a noisy copy of the test pairs (seeded: 10% targets swapped with another pair's, 5% left
   untranslated, the English copied, 5% cut to their first half) scored by the ensemble; how many of each
   kind of noise the lowest-scoring 20% catch, and how many clean pairs it drops.
"""
from __future__ import annotations

import argparse
import json
import random
import warnings
from pathlib import Path

import numpy as np

from attnseq.data.io import read_pairs
from attnseq.run.evaluation import bleu_chrf
from attnseq.run.inference import Translator

ALPHAS = (0.0, 0.5, 1.0, 1.5)


def bleu(tr, srcs, refs, **kw) -> float:
    return round(bleu_chrf([t.text for t in tr.translate(srcs, **kw)], refs)["bleu"], 2)


def ensembles(a, b, ckpt, valid, test) -> dict:
    runs = [str(Path(r) / ckpt) for r in (a, b)]
    modes = {m: bleu(Translator(runs, ensemble_mode=m), *valid, beam=5) for m in ("linear", "log_linear")}
    mode = max(modes, key=modes.get)
    out = {"valid_beam5_bleu_by_mode": modes, "mode": mode, "test": {}}
    for name, tr in (("A", Translator(runs[0])), ("B", Translator(runs[1])),
                     ("ensemble", Translator(runs, ensemble_mode=mode))):
        out["test"][name] = {"greedy": bleu(tr, *test), "beam5": bleu(tr, *test, beam=5)}
    return out


def rerank(a, b, ckpt, split, alpha) -> list[str]:
    """Run A's beam-5 5-best of each source, the one the A+B ensemble scores best (length penalty alpha)."""
    srcs, _ = split
    nbest = Translator(str(Path(a) / ckpt)).translate(srcs, beam=5, n_best=5)
    cands = [(i, text) for i, t in enumerate(nbest) for text, _ in t.nbest]
    judge = Translator([str(Path(r) / ckpt) for r in (a, b)], ensemble_mode="log_linear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                              # candidates cut at the length limit
        scored = judge.score([srcs[i] for i, _ in cands], [c for _, c in cands], alpha=alpha)
    best: dict[int, tuple[float, str]] = {}
    for (i, text), s in zip(cands, scored):
        if i not in best or s.score > best[i][0]:
            best[i] = (s.score, text)
    return [best[i][1] for i in range(len(srcs))]


def reranking(a, b, ckpt, valid, test) -> dict:
    by_alpha = {alpha: round(bleu_chrf(rerank(a, b, ckpt, valid, alpha), valid[1])["bleu"], 2) for alpha in ALPHAS}
    alpha = max(by_alpha, key=by_alpha.get)
    return {"valid_bleu_by_alpha": by_alpha, "alpha": alpha,
            "test": {"A_beam5": bleu(Translator(str(Path(a) / ckpt)), *test, beam=5),
                     "A_5best_reranked": round(bleu_chrf(rerank(a, b, ckpt, test, alpha), test[1])["bleu"], 2)}}


def noisy(pairs, seed=2026):
    """The pairs with 10% targets swapped, 5% untranslated (target = source), 5% cut in half; and each kind."""
    rng = random.Random(seed)
    idx = list(range(len(pairs)))
    rng.shuffle(idx)
    n = len(pairs) // 20
    kind = ["clean"] * len(pairs)
    out = list(pairs)
    swap = idx[:2 * n]
    for k, i in enumerate(swap):
        out[i] = (pairs[i][0], pairs[swap[(k + 1) % len(swap)]][1])
        kind[i] = "swapped"
    for i in idx[2 * n:3 * n]:
        out[i], kind[i] = (pairs[i][0], pairs[i][0]), "untranslated"
    for i in idx[3 * n:4 * n]:
        words = pairs[i][1].split()
        out[i], kind[i] = (pairs[i][0], " ".join(words[:max(1, len(words) // 2)])), "truncated"
    return out, kind


def filtering(a, b, ckpt, test_pairs) -> dict:
    pairs, kind = noisy(test_pairs)
    tr = Translator([str(Path(r) / ckpt) for r in (a, b)], ensemble_mode="log_linear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = np.array([s.score for s in tr.score([s for s, _ in pairs], [t for _, t in pairs])])
    dropped = set(np.argsort(scores, kind="stable")[:len(pairs) // 5].tolist())
    kinds = sorted(set(kind))
    return {k: {"n": kind.count(k), "in_lowest_20pct": sum(1 for i in dropped if kind[i] == k)} for k in kinds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--data", required=True)
    p.add_argument("--ckpt", default="averaged", help="which checkpoint of each run (default averaged)")
    args = p.parse_args()
    d = Path(args.data)
    valid_pairs, test_pairs = read_pairs(d / "valid.tsv"), read_pairs(d / "test.tsv")
    valid = ([s for s, _ in valid_pairs], [t for _, t in valid_pairs])
    test = ([s for s, _ in test_pairs], [t for _, t in test_pairs])
    result = {"ckpt": args.ckpt,
              "ensembles": ensembles(args.run_a, args.run_b, args.ckpt, valid, test),
              "reranking": reranking(args.run_a, args.run_b, args.ckpt, valid, test),
              "filtering": filtering(args.run_a, args.run_b, args.ckpt, test_pairs)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
