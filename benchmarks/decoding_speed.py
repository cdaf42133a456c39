"""Decoding speed with sampling and ensembles beside greedy and beam search: sentences per second of
``Translator.translate`` (and ``score``) on one data file's sources, the figures of README's "Decoding
options" section. Run it through a quiet machine (one measurement at a time).

    python benchmarks/decoding_speed.py RUN_A RUN_B --data FILE [--repeats 3] [--ckpt averaged]

Each configuration runs once to warm up, then ``--repeats`` times; the median wall time gives sentences/s
(texts in, whatever the n-best). Threads: attnseq's default, one per core.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

from attnseq.bench import cpu_model
from attnseq.data.io import read_pairs
from attnseq.run.inference import Translator

CONFIGS = {
    "greedy": {}, "beam 5": dict(beam=5), "sampling": dict(sample=True, seed=1),
    "sampling, 5 samples each": dict(sample=True, seed=1, n_best=5),
    "sampling, top-p 0.9": dict(sample=True, seed=1, top_p=0.9),
    "greedy, --no-repeat-ngram 3": dict(no_repeat_ngram=3),
}


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--data", required=True)
    p.add_argument("--ckpt", default="averaged")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    pairs = read_pairs(args.data)
    srcs, refs = [s for s, _ in pairs], [t for _, t in pairs]
    runs = [str(Path(r) / args.ckpt) for r in (args.run_a, args.run_b)]
    rows = {}
    for who, tr in (("one model", Translator(runs[0])), ("ensemble of 2", Translator(runs, ensemble_mode="log_linear"))):
        for name, kw in CONFIGS.items():
            rows[f"{who}: {name}"] = round(len(srcs) / timed(lambda: tr.translate(srcs, **kw), args.repeats), 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows[f"{who}: score the pairs"] = round(len(srcs) / timed(lambda: tr.score(srcs, refs), args.repeats), 1)
    print(json.dumps({"cpu": cpu_model(), "python": platform.python_version(), "n": len(srcs),
                      "repeats": args.repeats, "sentences_per_s": rows}, indent=1))


if __name__ == "__main__":
    main()
