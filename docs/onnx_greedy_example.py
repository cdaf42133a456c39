"""Translate with an attnseq ONNX export, without attnseq: onnxruntime, numpy and json only
(plus sentencepiece when the export's tokenizers are subword models).

    attnseq export --ckpt runs/date --format onnx --out date-onnx
    python onnx_greedy_example.py date-onnx "Jun 30, 2004" "03/16/2043"
    python onnx_greedy_example.py date-onnx < sentences.txt        # one sentence per line

Greedy decoding, one sentence at a time, following manifest.json: encode the sentence, cut it to
max_input_len tokens, reverse it if reverse_source; run encoder.onnx once; then feed
decoder_step.onnx the previous token (bos first) and its own h, c until it picks eos or the
output reaches the manifest's max_output_len (scale * source length + offset). A blank line
translates to a blank line.
The same loop is a few lines in C++, C#, Java or JavaScript with their onnxruntime packages.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


class Tokenizer:
    """The export's tokenizer files: {name}.json (char or word vocabulary) or {name}.spm.model."""

    def __init__(self, directory: Path, spec: dict, unk: int):
        self.kind, self.unk = spec["kind"], unk
        if self.kind == "sentencepiece":
            import sentencepiece as spm
            self.sp = spm.SentencePieceProcessor(model_file=str(directory / f"{spec['name']}.spm.model"))
        else:
            self.tokens = json.loads((directory / f"{spec['name']}.json").read_text(encoding="utf-8"))["tokens"]
            self.index = {t: i for i, t in enumerate(self.tokens)}

    def encode(self, text: str) -> list:
        if self.kind == "sentencepiece":
            return list(self.sp.encode(text))
        units = list(text) if self.kind == "char" else text.split()
        return [self.index.get(u, self.unk) for u in units]

    def decode(self, ids: list) -> str:
        if self.kind == "sentencepiece":
            return self.sp.decode(ids)
        return ("" if self.kind == "char" else " ").join(self.tokens[i] for i in ids)


class GreedyTranslator:
    def __init__(self, directory: str):
        d = Path(directory)
        self.m = m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        self.ids = m["special_ids"]                             # pad 0, bos 1, eos 2, unk 3
        self.src_tok = Tokenizer(d, m["tokenizers"]["source"], self.ids["unk"])
        self.tgt_tok = Tokenizer(d, m["tokenizers"]["target"], self.ids["unk"])
        self.encoder = ort.InferenceSession(str(d / m["graphs"]["encoder"]["file"]), providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(d / m["graphs"]["decoder_step"]["file"]),
                                            providers=["CPUExecutionProvider"])
        self.dec_outputs = [o["name"] for o in m["graphs"]["decoder_step"]["outputs"]]

    def translate(self, text: str) -> str:
        if not text.strip():
            return ""
        ids = (self.src_tok.encode(text) or [self.ids["unk"]])[:self.m["max_input_len"]]
        if self.m["reverse_source"]:
            ids = ids[::-1]
        src = np.array([ids], dtype=np.int64)                   # (1, Ts)
        hs, h, c = self.encoder.run(None, {"src_ids": src, "src_lengths": np.array([len(ids)], dtype=np.int64)})
        mask = np.ones(src.shape, dtype=bool)                   # one sentence: no padding
        rule = self.m["max_output_len"]
        token = np.array([self.ids["bos"]], dtype=np.int64)
        out = []
        for _ in range(rule["scale"] * len(ids) + rule["offset"]):
            log_probs, h, c, _ = self.decoder.run(self.dec_outputs, {"prev_token": token, "h": h, "c": c,
                                                                     "hs": hs, "src_mask": mask})
            token = log_probs.argmax(axis=1)                    # (1,)
            if token[0] == self.ids["eos"]:
                break
            out.append(int(token[0]))
        return self.tgt_tok.decode([i for i in out if i not in (self.ids["pad"], self.ids["bos"])])


def main(argv: list) -> int:
    if not argv:
        print("usage: python onnx_greedy_example.py EXPORT_DIR [SENTENCE ...] (else lines from stdin)", file=sys.stderr)
        return 2
    sys.stdin.reconfigure(encoding="utf-8")
    sys.stdout.reconfigure(encoding="utf-8")
    translator = GreedyTranslator(argv[0])
    lines = argv[1:] or sys.stdin.read().splitlines()
    for line in lines:
        print(translator.translate(line))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
