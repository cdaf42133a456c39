"""Translate with an attnseq ONNX export, without attnseq: onnxruntime, numpy and json only
(plus sentencepiece when the export's tokenizers are subword models).

    attnseq export --ckpt runs/date --format onnx --out date-onnx
    python onnx_greedy_example.py date-onnx "Jun 30, 2004" "03/16/2043"
    python onnx_greedy_example.py date-onnx < sentences.txt        # one sentence per line

Greedy decoding, one sentence at a time, following manifest.json: encode the sentence, cut it to
max_input_len tokens, reverse it if reverse_source; run encoder.onnx once; then feed
decoder_step.onnx the previous token (bos first), the encoder outputs it reads as they are
(decoder_memory: hs, and the keys of a learned attention score) and its own state (decoder_state:
h, c (a GRU has h alone), and feed with input feeding; the encoder gives the first) until it picks eos or the output
reaches the manifest's max_output_len (scale * source length + offset). A blank line translates to
a blank line. Exports from before decoder_memory/decoder_state were written read as the book
model's: memory hs, state h and c.
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
        self.enc_outputs = [o["name"] for o in m["graphs"]["encoder"]["outputs"]]
        self.memory = m.get("decoder_memory", ["hs"])
        self.state = m.get("decoder_state", [dict(input="h", output="h_out", initial="h0"),
                                             dict(input="c", output="c_out", initial="c0")])
        self.dec_outputs = ["log_probs"] + [s["output"] for s in self.state]

    def translate(self, text: str) -> str:
        if not text.strip():
            return ""
        ids = (self.src_tok.encode(text) or [self.ids["unk"]])[:self.m["max_input_len"]]
        if self.m["reverse_source"]:
            ids = ids[::-1]
        src = np.array([ids], dtype=np.int64)                   # (1, Ts)
        enc = dict(zip(self.enc_outputs, self.encoder.run(
            self.enc_outputs, {"src_ids": src, "src_lengths": np.array([len(ids)], dtype=np.int64)})))
        feed = {name: enc[name] for name in self.memory}        # hs (and keys): the same at every step
        feed["src_mask"] = np.ones(src.shape, dtype=bool)       # one sentence: no padding
        state = {s["input"]: enc[s["initial"]] for s in self.state}   # h, c (and feed) to start
        rule = self.m["max_output_len"]
        token = np.array([self.ids["bos"]], dtype=np.int64)
        out = []
        for _ in range(rule["scale"] * len(ids) + rule["offset"]):
            log_probs, *new = self.decoder.run(self.dec_outputs, {**feed, **state, "prev_token": token})
            state = {s["input"]: value for s, value in zip(self.state, new)}
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
