"""Default decoding outputs saved from the code before sampling, ensembles, prefixes and guards existed
(issue 23), on the date and toy en->ko tasks: what ``test_decoding_defaults`` checks today's code against.

The models are float64 with random weights drawn from fixed seeds (no training, so no dependence on a
machine's training run), with the shipped tokenizers' vocabularies built from the tasks' training files and
the first sources of their test files. ``python tests/golden_decoding.py`` rewrites
``tests/data/decoding_golden.json``; only do that on purpose, from code whose defaults are known right.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "data" / "decoding_golden.json"
N_SOURCES = 16
# (task, tokenizer, model options, weight scale, eos output bias): eos biases with which some rows end
# early and some run to the length limit
CASES = {
    "date-book": ("date", "char", {}, 1.2, 2.0),
    "date-all": ("date", "char", dict(encoder_layers=2, decoder_layers=2, bidirectional=True,
                                      attention="additive", input_feeding=True, tie_embeddings=True), 1.0, 5.0),
    "toy-book": ("toy-en-ko", "word", {}, 1.2, 5.0),
    "toy-general": ("toy-en-ko", "word", dict(attention="general", input_feeding=True), 1.0, 6.0),
}
# the searches whose outputs are saved, as Translator.translate's keywords
SEARCHES = {"greedy": {}, "beam3-nbest2-alpha0.6": dict(beam=3, n_best=2, alpha=0.6),
            "beam4": dict(beam=4), "greedy-max5": dict(max_len=5)}
DETAILED = ("greedy", "beam3-nbest2-alpha0.6")      # these also keep token probabilities and mean positions


def case_checkpoint(name: str, directory: Path) -> Path:
    """The checkpoint of case ``name``, written into ``directory``."""
    from attnseq.data.io import read_pairs
    from attnseq.data.tokenizers import CharTokenizer, WordTokenizer
    from attnseq.nn.model import AttentionSeq2seq
    from attnseq.run.checkpoint import save_checkpoint
    task, kind, options, scale, eos_bias = CASES[name]
    pairs = read_pairs(ROOT / "data" / task / "train.tsv")[:3000]
    tok = {"char": CharTokenizer, "word": WordTokenizer}[kind]
    src_tok, tgt_tok = tok.build(s for s, _ in pairs), tok.build(t for _, t in pairs)
    model = AttentionSeq2seq(src_tok.vocab_size, tgt_tok.vocab_size, 8, 16, dtype="float64", seed=3, **options)
    rng = np.random.default_rng(sorted(CASES).index(name))
    model.load_state_dict({k: rng.standard_normal(v.shape) * scale for k, v in model.state_dict().items()})
    model.state_dict()["decoder.out.b"][model.eos_id] = eos_bias
    return save_checkpoint(directory / name, model, None, src_tok, tgt_tok, {}, {"epoch": 0, "step": 0})


def sources(name: str) -> list[str]:
    from attnseq.data.io import read_pairs
    return [s for s, _ in read_pairs(ROOT / "data" / CASES[name][0] / "test.tsv")[:N_SOURCES]]


def outputs(translator, texts: list[str]) -> dict:
    """Every search's outputs: per source its n-best texts, scores, the chosen output's tokens, their
    probabilities and attention: per output token, the weighted mean source position and the argmax."""
    found = {}
    for search, kw in SEARCHES.items():
        rows = []
        for t in translator.translate(texts, details=True, **kw):
            row = dict(nbest=[text for text, _ in t.nbest], scores=[s for _, s in t.nbest], tokens=list(t.out_tokens),
                       w_argmax=t.weights.argmax(axis=1).tolist())
            if search in DETAILED:
                row.update(probs=t.probs.tolist(), w_pos=(t.weights @ np.arange(t.weights.shape[1])).tolist())
            rows.append(row)
        found[search] = rows
    return found


def main(out: Path = GOLDEN) -> None:
    import tempfile
    from attnseq.run.inference import Translator
    with tempfile.TemporaryDirectory() as d:
        golden = {name: outputs(Translator(str(case_checkpoint(name, Path(d)))), sources(name)) for name in CASES}
    out.write_text(json.dumps(golden, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    print(out, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
