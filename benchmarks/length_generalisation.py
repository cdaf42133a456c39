"""GRU against LSTM on the numbers task: trained on numbers of 1-4 digits, tested on 5 and 6.

    python benchmarks/length_generalisation.py --out runs/lengths            # 3 seeds of each cell
    python benchmarks/length_generalisation.py --out runs/lengths --seeds 0 --json

Each (cell, seed) trains ``attnseq train --data numbers --cell CELL --seed S`` (the task's defaults)
in RUN/CELL-sS, then decodes the test split greedily with what ``--ckpt RUN`` means and scores it:
exact match (the whole number right), BLEU and chrF, the mean words out (the references': 7.6) and
the share of outputs with the reference's number of words, and how often each half of the number is right: the words of its last three
digits (the output ends with them, a part of the target train had every kind of) and of its
thousands (the output starts with them: "fifty six thousand" or "six hundred ten thousand", which
train never showed before "thousand"). Every figure is the test split's, split by digits (5, 6).
Prints one table (or with --json one JSON line per run). Not timed: speed is not the point.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import sacrebleu

from attnseq.data.corpus import shipped_dir
from attnseq.data.io import read_pairs
from attnseq.data.numbers import number_words
from attnseq.run.inference import Translator
from attnseq.run.training import train


def score(pairs: list[tuple[str, str]], outputs: list[str]) -> dict:
    """The figures of one run's outputs on ``pairs`` (source digits, reference words)."""
    n = [int(src.replace(" ", "")) for src, _ in pairs]
    refs = [ref for _, ref in pairs]
    tails = [number_words(k % 1000).split() if k % 1000 else [] for k in n]
    heads = [number_words(k // 1000).split() + ["thousand"] for k in n]
    out = [o.split() for o in outputs]
    return dict(
        n=len(pairs),
        exact=100 * sum(o == r for o, r in zip(outputs, refs)) / len(pairs),
        bleu=sacrebleu.corpus_bleu(outputs, [refs]).score,
        chrf=sacrebleu.corpus_chrf(outputs, [refs]).score,
        length=100 * sum(len(o) == len(r.split()) for o, r in zip(out, refs)) / len(pairs),
        words=statistics.mean(map(len, out)), ref_words=statistics.mean(len(r.split()) for r in refs),
        last3=100 * sum(o[len(o) - len(t):] == t for o, t in zip(out, tails)) / len(pairs),
        thousands=100 * sum(o[:len(h)] == h for o, h in zip(out, heads)) / len(pairs),
    )


def run_one(out: Path, cell: str, seed: int) -> dict:
    run = out / f"{cell}-s{seed}"
    if not (run / "result.json").exists():
        train(dict(data="numbers", cell=cell, seed=seed, out=str(run), examples=0), log=lambda *a: None)
    pairs = read_pairs(shipped_dir("numbers") / "test.tsv")
    outputs = [t.text for t in Translator(str(run)).translate([s for s, _ in pairs])]
    by_digits = {d: [(p, o) for p, o in zip(pairs, outputs) if len(p[0].split()) == d] for d in (5, 6)}
    valid = json.loads((run / "result.json").read_text())["best_valid_exact_match"]
    return dict(cell=cell, seed=seed, valid_exact=100 * valid, all=score(pairs, outputs),
                **{f"digits{d}": score([p for p, _ in rows], [o for _, o in rows]) for d, rows in by_digits.items()})


def table(results: list[dict]) -> str:
    """Medians over seeds (min-max) per cell."""
    lines = ["| cell | valid exact (1-4 digits) | test exact | BLEU | chrF | words out | as many as the reference | "
             "last three digits right (5 / 6 digits) | thousands right (5 / 6 digits) |", "|---" * 9 + "|"]
    for cell in sorted({r["cell"] for r in results}):
        rs = [r for r in results if r["cell"] == cell]

        def med(get):
            v = [get(r) for r in rs]
            return f"{statistics.median(v):.1f}" + (f" ({min(v):.1f}-{max(v):.1f})" if len(v) > 1 else "")
        lines.append(f"| {cell} | {med(lambda r: r['valid_exact'])} | {med(lambda r: r['all']['exact'])} | "
                     f"{med(lambda r: r['all']['bleu'])} | {med(lambda r: r['all']['chrf'])} | "
                     f"{med(lambda r: r['all']['words'])} | {med(lambda r: r['all']['length'])} | "
                     f"{med(lambda r: r['digits5']['last3'])} / "
                     f"{med(lambda r: r['digits6']['last3'])} | {med(lambda r: r['digits5']['thousands'])} / "
                     f"{med(lambda r: r['digits6']['thousands'])} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory of the runs (one per cell and seed; kept, reused)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    p.add_argument("--json", action="store_true", help="one JSON line per run instead of the table")
    args = p.parse_args()
    results = [run_one(Path(args.out), cell, seed) for cell in args.cells for seed in args.seeds]
    print("\n".join(json.dumps(r) for r in results) if args.json else table(results))


if __name__ == "__main__":
    main()
