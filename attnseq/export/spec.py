"""What an export directory holds, written down once: file names, graph inputs and outputs, the manifest.

Both sides use this module: the exporter writes ``manifest.json`` from it, the runtime reads the
manifest back through ``read_manifest``, which checks every key, file size and checksum and
names the file at fault in one ``CheckpointError``. No onnx or onnxruntime import here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ..errors import CheckpointError, require_extra
from ..data.tokenizers import UNK_ID
from ..nn.attention import SCORES
from ..nn.config import ModelConfig
from ..nn.output_length import OutputLengthRule
from ..run.checkpoint import read_json

FORMAT = "attnseq-onnx"
FORMAT_VERSION = 3      # 3: a GRU's graphs, whose state is h alone (no c0, c, c_out)
READS_VERSIONS = (1, 2, 3)  # 2: graphs whose inputs differ from the book model's (layers, input feeding, keys);
#                             1: the book model's inputs and outputs, which every export of it keeps
OPSET = 17              # onnxruntime >= 1.13 and onnx >= 1.12 run it; LSTM-14, GRU-14, Softmax-13
IR_VERSION = 8          # the IR that goes with opset 17: newer onnx writes a newer one that older runtimes refuse
MANIFEST = "manifest.json"
ENCODER, DECODER_STEP = "encoder", "decoder_step"
GRAPH_FILES = {ENCODER: "encoder.onnx", DECODER_STEP: "decoder_step.onnx"}
TOKENIZER_NAMES = {"source": "src_vocab", "target": "tgt_vocab"}
INSTALL_HINT = "pip install 'attnseq[export]'"

# dtype names used in the manifest -> onnxruntime's type strings
ORT_TYPES = {"int64": "tensor(int64)", "float32": "tensor(float)", "bool": "tensor(bool)"}


def require(module: str):
    """Import ``module`` (onnx, onnxruntime) or raise ``MissingExtraError`` saying how to install the extra."""
    return require_extra(module, "ONNX support", INSTALL_HINT)


def _io(name, dtype, shape, doc):
    return dict(name=name, dtype=dtype, shape=list(shape), doc=doc)


# Model options that change how a model trains, not what it computes once trained: no graph has them
# (nor dropout, which is no option of the model's shape either).
TRAINING_ONLY = ("label_smoothing",)
# The model options that shape the graphs, with the book model's values (a manifest "model" without
# a key means the book's): every one of the model's (``ModelConfig.options``) but the training-only ones.
BOOK_OPTIONS = {k: v for k, v in ModelConfig.options().items() if k not in TRAINING_ONLY}
# The model config keys the graphs express: every field of ``ModelConfig``; a model whose config holds
# any other (a config of a later attnseq's) is refused.
KNOWN_MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


def model_options(model: ModelConfig | dict) -> dict:
    """The graph-shaping options of a model's ``ModelConfig`` or a manifest's "model" (missing keys: the book's)."""
    values = model.to_dict() if isinstance(model, ModelConfig) else model
    return {k: values.get(k, v) for k, v in BOOK_OPTIONS.items()}


def state_parts(options: dict) -> tuple:
    """The recurrent state's parts: ("h", "c") for the LSTM, ("h",) for the GRU."""
    return ("h",) if options.get("cell", "lstm") == "gru" else ("h", "c")


def decoder_state(options: dict) -> list:
    """The decoder step's state: [{"input", "output", "initial"}], each input fed the encoder's output
    ``initial`` at the first step and the step's own ``output`` after."""
    state = [dict(input=p, output=f"{p}_out", initial=f"{p}0") for p in state_parts(options)]
    if options.get("input_feeding"):
        state.append(dict(input="feed", output="feed_out", initial="feed0"))
    return state


def decoder_memory(options: dict) -> list:
    """Encoder outputs fed to every decoder step as they are: hs, and the attention keys for a learned score."""
    return ["hs"] + (["keys"] if options.get("attention", "dot") != "dot" else [])


def io_version(options: dict) -> int:
    """1 when the graphs' inputs and outputs are the book model's (older attnseq runs them), 3 for a
    GRU's (no c: an attnseq that reads only 1 and 2 refuses it by its version), else 2."""
    o = {**BOOK_OPTIONS, **options}
    if o["cell"] == "gru":
        return 3
    same = o["decoder_layers"] == 1 and not o["input_feeding"] and o["attention"] == "dot"
    return 1 if same else 2


def graph_io(hidden_size: int, tgt_vocab_size: int, dtype: str = "float32", **options) -> dict:
    """graph -> {"inputs": [...], "outputs": [...]}, each entry {name, dtype, shape, doc}.

    Shapes use the symbolic dimensions N (batch rows) and Ts (source length); H, V and the layer
    count L are fixed. ``options`` (``BOOK_OPTIONS`` keys) add what they need: h and c are (L, N, H)
    with L > 1 decoder layers, else (N, H); a GRU has no c; input feeding adds the state feed (N, H) (feed0 zeros
    from the encoder); a learned attention score (general, additive) adds the keys (N, Ts, H) the
    encoder makes once and every step reads.
    """
    H, V = hidden_size, tgt_vocab_size
    o = {**BOOK_OPTIONS, **options}
    L, feeding, keys = o["decoder_layers"], o["input_feeding"], o["attention"] != "dot"
    parts = state_parts(o)
    state = ["N", H] if L == 1 else [L, "N", H]
    bridged = o["bidirectional"] or o["encoder_layers"] != L
    start = ("the encoder's final states through the bridge (linear + tanh)" if bridged else
             "the encoder's h at each row's last real token" if L == 1 else
             "each encoder layer's h at each row's last real token")
    feed_in = [_io("feed", dtype, ["N", H], "the attentional vector of the last step (feed0 at the first)")]
    feed_out = [_io("feed_out", dtype, ["N", H], "this step's attentional vector tanh(W_c [context, h])")]
    keys_io = [_io("keys", dtype, ["N", "Ts", H], f"the {o['attention']} score's keys, made once from hs")]
    return {
        ENCODER: dict(
            inputs=[_io("src_ids", "int64", ["N", "Ts"], "source token ids, right-padded with the pad id"),
                    _io("src_lengths", "int64", ["N"], "real tokens per row, 1 <= length <= Ts")],
            outputs=[_io("hs", dtype, ["N", "Ts", H], "encoder states; rows past their length are zero")]
            + (keys_io if keys else [])
            + [_io("h0", dtype, state, f"decoder's initial h: {start}")]
            + [_io("c0", dtype, state, "decoder's initial c, likewise")][:len(parts) - 1]
            + ([_io("feed0", dtype, ["N", H], "the decoder's first attentional vector: zeros")] if feeding else [])),
        DECODER_STEP: dict(
            inputs=[_io("prev_token", "int64", ["N"], "the previous output token (bos at the first step)"),
                    _io("h", dtype, state, "decoder h (h0 at the first step)")]
            + [_io("c", dtype, state, "decoder c (c0 at the first step)")][:len(parts) - 1]
            + (feed_in if feeding else [])
            + [_io("hs", dtype, ["N", "Ts", H], "the encoder's hs")]
            + (keys_io if keys else [])
            + [_io("src_mask", "bool", ["N", "Ts"], "True at real source tokens (src_ids != pad)")],
            outputs=[_io("log_probs", dtype, ["N", V], "log-softmax over the target vocabulary"),
                     _io("h_out", dtype, state, "new h")]
            + [_io("c_out", dtype, state, "new c")][:len(parts) - 1]
            + (feed_out if feeding else [])
            + [_io("attention", dtype, ["N", "Ts"], "attention weights over the source, 0 at padding")]),
    }


def rule_entry(rule: OutputLengthRule) -> dict:
    """The manifest's ``max_output_len``: the rule as config.json holds it (scale, offset and the
    text), with what Ts means for a runtime; ``read_rule`` reads it back."""
    return dict(rule.to_json(), Ts="tokens of the longest source in the batch (after truncation to max_input_len)")


def read_rule(manifest: dict, path: Path) -> OutputLengthRule:
    """The manifest's ``max_output_len`` as a rule; a CheckpointError naming ``path`` when malformed."""
    return OutputLengthRule.from_json(manifest["max_output_len"], f"{path}: max_output_len")


def file_digest(data: bytes) -> dict:
    return dict(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def build_manifest(model_config: ModelConfig, tokenizers: dict, reverse_source: bool, max_input_len: int,
                   max_output_len: dict, files: dict, provenance: dict) -> dict:
    """The manifest: everything a runtime needs to reproduce attnseq's translate.

    ``tokenizers``: side ("source"/"target") -> {"kind", "name", "files"}; ``max_output_len``:
    ``rule_entry`` of the rule; ``files``: file name -> bytes.
    """
    c = model_config
    options = model_options(c)
    H, V = c.hidden_size, c.tgt_vocab_size
    io = graph_io(H, V, **options)
    return {
        "format": FORMAT,
        "format_version": io_version(options),
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "dtype": "float32",
        "model": dict(src_vocab_size=c.src_vocab_size, tgt_vocab_size=c.tgt_vocab_size, wordvec_size=c.wordvec_size,
                      hidden_size=H, **options),
        "special_ids": {"pad": c.pad_id, "bos": c.bos_id, "eos": c.eos_id, "unk": UNK_ID},
        "tokenizers": tokenizers,
        "reverse_source": bool(reverse_source),
        "max_input_len": int(max_input_len),
        "max_output_len": max_output_len,
        "decoding": {
            "blank_input": "a blank line is encoded as [unk] and its output is the empty string",
            "greedy": "argmax of log_probs at every step, until eos or max_output_len tokens",
            "source": "encode, truncate to max_input_len, then reverse when reverse_source",
            "step": "decoder_step reads prev_token, src_mask, every decoder_memory output of the encoder as it "
                    "is, and its decoder_state: each input the encoder's 'initial' output first, then the "
                    "step's own 'output'",
        },
        "decoder_memory": decoder_memory(options),
        "decoder_state": decoder_state(options),
        "graphs": {g: dict(file=GRAPH_FILES[g], **io[g]) for g in (ENCODER, DECODER_STEP)},
        "files": {name: file_digest(data) for name, data in sorted(files.items())},
        "provenance": provenance,
    }


# -- reading one back ---------------------------------------------------------------------------
REQUIRED = {
    "format": str, "format_version": int, "opset": int, "dtype": str, "model": dict, "special_ids": dict,
    "tokenizers": dict, "reverse_source": bool, "max_input_len": int, "max_output_len": dict,
    "graphs": dict, "files": dict,
}


def _fail(path: Path, msg: str):
    raise CheckpointError(f"{path}: {msg}")


def _need(path: Path, obj: dict, key: str, kind, where: str = ""):
    if key not in obj:
        _fail(path, f"missing key '{where}{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(path, f"'{where}{key}' must be a {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def read_manifest(directory: str | Path) -> dict:
    """manifest.json of an export directory, with every key the runtime uses checked."""
    path = Path(directory) / MANIFEST
    m = read_json(path, " (not an attnseq ONNX export?)")
    for key, kind in REQUIRED.items():
        _need(path, m, key, kind)
    if m["format"] != FORMAT:
        _fail(path, f"format {m['format']!r}, expected {FORMAT!r}")
    if m["format_version"] not in READS_VERSIONS:
        _fail(path, f"format_version {m['format_version']}, this attnseq reads "
                    f"{', '.join(map(str, READS_VERSIONS[:-1]))} and {READS_VERSIONS[-1]}")
    if m["dtype"] != "float32":
        _fail(path, f"dtype {m['dtype']!r}: this attnseq runs float32 exports only")
    for key in ("src_vocab_size", "tgt_vocab_size", "wordvec_size", "hidden_size"):
        if _need(path, m["model"], key, int, "model.") < 1:
            _fail(path, f"'model.{key}' must be positive")
    for key in ("pad", "bos", "eos", "unk"):
        _need(path, m["special_ids"], key, int, "special_ids.")
    read_rule(m, path)
    if m["max_input_len"] < 1:
        _fail(path, "'max_input_len' must be positive")
    for side, name in TOKENIZER_NAMES.items():
        tok = _need(path, m["tokenizers"], side, dict, "tokenizers.")
        _need(path, tok, "kind", str, f"tokenizers.{side}.")
        if _need(path, tok, "name", str, f"tokenizers.{side}.") != name:
            _fail(path, f"'tokenizers.{side}.name' must be {name!r}, got {tok['name']!r}")
        for f in _need(path, tok, "files", list, f"tokenizers.{side}."):
            if f not in m["files"]:
                _fail(path, f"tokenizer file {f!r} is not listed under 'files'")
    options = _read_options(path, m)
    expected = graph_io(m["model"]["hidden_size"], m["model"]["tgt_vocab_size"], **options)
    for g, file in GRAPH_FILES.items():
        spec = _need(path, m["graphs"], g, dict, "graphs.")
        if _need(path, spec, "file", str, f"graphs.{g}.") != file:
            _fail(path, f"'graphs.{g}.file' must be {file!r}, got {spec['file']!r}")
        if file not in m["files"]:
            _fail(path, f"graph file {file!r} is not listed under 'files'")
        for side in ("inputs", "outputs"):
            entries = _need(path, spec, side, list, f"graphs.{g}.")
            got = [(e.get("name"), e.get("dtype"), e.get("shape")) for e in entries if isinstance(e, dict)]
            want = [(e["name"], e["dtype"], e["shape"]) for e in expected[g][side]]
            if got != want:
                _fail(path, f"'graphs.{g}.{side}' is {got}, but model sizes "
                            f"(hidden {m['model']['hidden_size']}, vocab {m['model']['tgt_vocab_size']}) "
                            f"and options give {want}")
    for name, digest in m["files"].items():
        if not isinstance(digest, dict) or not isinstance(digest.get("bytes"), int) or \
                not isinstance(digest.get("sha256"), str):
            _fail(path, f"'files.{name}' must be {{\"bytes\": int, \"sha256\": str}}")
    return m


def _read_options(path: Path, m: dict) -> dict:
    """The manifest's model options (missing: the book's; an export of version 1 has none), checked,
    with ``decoder_memory`` and ``decoder_state`` filled in or checked against them."""
    options = model_options(m["model"])
    for key, book in BOOK_OPTIONS.items():
        kind = type(book)
        _need(path, options, key, kind, "model.")
        if kind is int and options[key] < 1:
            _fail(path, f"'model.{key}' must be positive")
    if options["cell"] not in ("lstm", "gru"):
        _fail(path, f"'model.cell' is {options['cell']!r}; this attnseq knows lstm, gru")
    if options["attention"] not in SCORES:
        _fail(path, f"'model.attention' is {options['attention']!r}; this attnseq knows {', '.join(SCORES)}")
    if m["format_version"] < io_version(options):
        _fail(path, f"format_version {m['format_version']} cannot hold model options {options}")
    for key, want in (("decoder_memory", decoder_memory(options)), ("decoder_state", decoder_state(options))):
        if m.setdefault(key, want) != want:
            _fail(path, f"'{key}' is {m[key]}, but the model options give {want}")
    return options


def read_listed_file(directory: str | Path, manifest: dict, name: str) -> bytes:
    """The bytes of a file the manifest lists, checked against its size and sha256."""
    path = Path(directory) / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{Path(directory)}: missing {name}, which {MANIFEST} lists") from None
    want = manifest["files"][name]
    if len(data) != want["bytes"]:
        _fail(path, f"{len(data)} bytes, {MANIFEST} says {want['bytes']}: truncated or not this export's file")
    if hashlib.sha256(data).hexdigest() != want["sha256"]:
        _fail(path, f"sha256 differs from {MANIFEST}'s: corrupt or not this export's file")
    return data


def is_export_dir(directory: Path) -> bool:
    """True when ``directory`` holds a manifest.json of this format (an earlier export to replace)."""
    try:
        return json.loads((directory / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
