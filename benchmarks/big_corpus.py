"""Big corpora: read, tokenize and encode 10k, 100k and 1M pairs, then train on them; time and peak memory.

    python benchmarks/big_corpus.py                          # 10k, 100k and 1M pairs, 40 steps each
    python benchmarks/big_corpus.py --sizes 100000 --steps 200 --json

The corpus is the toy English -> Korean grammar of ``attnseq.data.toy_translation`` (about 66
characters a pair), written once as ``WORK/corpus-N.tsv`` (1M pairs take about 30 s to make).
Each size runs in two fresh processes, so each peak is its own:

1. phases: ``load_data`` with ``--train FILE`` (2000 pairs held out to validate), the corpus
   tokenizers (sentencepiece, 8000 pieces a side), ``encode_pairs`` of the splits: the wall time of
   each, the resident memory after it and the peak during it (Linux: VmHWM, reset between phases);
2. training: ``attnseq train --train FILE`` with the corpus defaults (embedding 128, hidden 256,
   batch 64, --max-len 100, threads one per core), stopped after ``--steps`` steps by SIGTERM
   right after its first mid-epoch save (``--save-every STEPS`` and the ``mid-epoch-saved``
   fault point): the whole process's peak RSS and wall time.

Heavy (minutes, GiBs): run it on a quiet machine. Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000)
MiB = 2 ** 20


def _status(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")       # VmHWM := VmRSS
    except OSError:
        pass


def make_corpora(work: Path, sizes, seed: int = 0) -> dict[int, Path]:
    """``WORK/corpus-N.tsv``: N toy English -> Korean pairs, each size the first N lines of the largest.
    Files already there are kept."""
    from itertools import islice

    from attnseq.data.toy_translation import sentence
    paths = {n: work / f"corpus-{n}.tsv" for n in sizes}
    largest = paths[max(sizes)]
    if not largest.exists():
        rng = random.Random(seed)
        _write(largest, ("\t".join(sentence(rng)) + "\n" for _ in range(max(sizes))))
    for n, path in paths.items():
        if not path.exists():
            with open(largest, encoding="utf-8") as f:
                _write(path, islice(f, n))
    return paths


def _write(path: Path, lines) -> None:
    tmp = path.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    tmp.rename(path)


# -- child 1: the phases ------------------------------------------------------------------------
def phases(corpus: Path) -> dict:
    """Times and memory of loading, tokenizer training and encoding, in this process."""
    from attnseq.data.batching import encode_pairs
    from attnseq.data.corpus import build_tokenizers, load_data
    from attnseq.run.config import resolve_config
    cfg = resolve_config(dict(train=str(corpus), out="unused"))
    out = dict(baseline_mib=_status("VmRSS") / MiB)

    def phase(name, fn):
        _reset_peak()
        t0 = time.perf_counter()
        result = fn()
        out[f"{name}_s"] = time.perf_counter() - t0
        out[f"{name}_peak_mib"] = _status("VmHWM") / MiB
        out[f"{name}_rss_mib"] = _status("VmRSS") / MiB
        return result

    data = phase("load", lambda: load_data(cfg))
    toks = phase("tokenizers", lambda: build_tokenizers(cfg, data["train"]))
    train = phase("encode", lambda: encode_pairs(data.pop("train"), *toks, max_len=cfg["max_len"],
                                                 keep_pairs=False, compact=True))     # as the Trainer does
    out.update(pairs=len(train) + train.dropped, src_width=train.src.shape[1], tgt_width=train.tgt.shape[1],
               ids_mib=(train.src.nbytes + train.tgt.nbytes) / MiB, id_dtype=str(train.src.dtype))
    return out


# -- child 2: training --------------------------------------------------------------------------
def training(corpus: Path, work: Path, steps: int) -> dict:
    """``attnseq train`` on the corpus, stopped after ``steps`` steps; its peak RSS (wait4) and time."""
    run = work / f"run-{corpus.stem}"
    if run.exists():
        import shutil
        shutil.rmtree(run)
    cmd = [sys.executable, "-m", "attnseq.cli", "train", "--train", str(corpus), "--out", str(run), "--epochs", "1",
           "--save-every", str(steps), "--no-plot", "--examples", "0"]
    env = dict(os.environ, ATTNSEQ_KILL_AT="mid-epoch-saved:1:TERM")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 128 + signal.SIGTERM:
        raise RuntimeError(f"training on {corpus} ended with {p.returncode}, not a stop after {steps} steps:\n{err}")
    return dict(train_steps=steps, train_wall_s=wall, train_peak_mib=usage.ru_maxrss * 1024 / MiB)


def _child(args) -> None:
    corpus = Path(args.corpus)
    print(json.dumps(phases(corpus) if args.child == "phases" else training(corpus, Path(args.work), args.steps)))


def _run_child(kind: str, corpus: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--corpus", str(corpus), "--work", str(args.work),
           "--steps", str(args.steps)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} on {corpus} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """Markdown; bytes per pair: the training peak's growth from the size before, per extra pair."""
    lines = ["| training pairs | load s | tokenizers s | encode s | peak MiB: load / tokenizers / encode | "
             f"ids MiB | training peak MiB ({rows[0]['train_steps']} steps) | bytes per pair |",
             "|---:|---:|---:|---:|---|---:|---:|---:|"]
    for before, r in zip([None] + rows, rows):
        per_pair = "" if before is None else \
            f"{(r['train_peak_mib'] - before['train_peak_mib']) * MiB / (r['pairs'] - before['pairs']):.0f}"
        lines.append(f"| {r['pairs']:,} | {r['load_s']:.1f} | {r['tokenizers_s']:.1f} | {r['encode_s']:.1f} | "
                     f"{r['load_peak_mib']:.0f} / {r['tokenizers_peak_mib']:.0f} / {r['encode_peak_mib']:.0f} | "
                     f"{r['ids_mib']:.0f} | {r['train_peak_mib']:.0f} | {per_pair} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="corpus sizes in pairs")
    p.add_argument("--steps", type=int, default=40, help="training steps per size (stopped by SIGTERM after)")
    p.add_argument("--work", type=Path, default=Path("/tmp/attnseq-big-corpus"), help="corpora and runs go here")
    p.add_argument("--json", action="store_true", help="one JSON line per size instead of the table")
    p.add_argument("--child", choices=["phases", "training"], help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    args.work.mkdir(parents=True, exist_ok=True)
    rows, corpora = [], make_corpora(args.work, args.sizes)
    for n in sorted(args.sizes):
        corpus = corpora[n]
        row = dict(_run_child("phases", corpus, args), **_run_child("training", corpus, args))
        rows.append(row)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{n:,} pairs: {json.dumps(row)}", file=sys.stderr)
    if not args.json:
        print(table(rows))


if __name__ == "__main__":
    main()
