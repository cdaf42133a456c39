"""The two ONNX graphs of an AttentionSeq2seq, built from its arrays with onnx's helper API.

No tracing and no torch: each graph is written node by node from the checkpoint's parameters
(``model.state_dict()``: ``encoder.embed.W`` (Vs, D), ``encoder.lstm.Wx`` (D, 4H), ``.Wh`` (H, 4H),
``.b`` (4H), the same under ``decoder.``, and ``decoder.out.W`` (2H, V), ``.b`` (V) for the book
model; the options add their own, listed below). Every parameter must be read by some node
(``Weights`` counts them): one left unread would be an option these graphs do not express, and the
export is refused rather than written wrong.

encoder.onnx, src_ids (N, Ts), src_lengths (N,) -> hs (N, Ts, H), [keys (N, Ts, H)], h0, c0, [feed0]:
    Gather (embedding) -> Transpose to time-major -> **the ONNX LSTM operator**, one node per layer
    (``encoder.lstm``, ``encoder.lstm2`` ...) -> back to (N, Ts, H).
    The encoder is a recurrence over Ts, and the LSTM operator is that recurrence as one node
    which every runtime implements natively (onnxruntime on CPU, mobile and web, TensorRT,
    OpenVINO...). Its ``sequence_lens`` input stops each row at its own length, so Y_h / Y_c are
    the state at each row's last real token, which is attnseq's rule; hs past a row's length
    comes out as zeros (attnseq computes values there; attention masks them either way).
    A bidirectional layer (``.fw``, ``.bw``, each H/2) is one node with direction="bidirectional":
    with sequence_lens its reverse direction starts at each row's last real token, attnseq's rule
    too; Y (Ts, 2, N, H/2) becomes [forward, backward] on the last axis, as attnseq concatenates.
    Writing the recurrence by hand would need a Scan or Loop subgraph, which runtimes support
    less widely and run slower. The cost is a reordering of the weights: attnseq orders the
    gates [i, f, o, g] with Wx (D, 4H), ONNX [i, o, f, c] with W = (1, 4H, D), i.e. Wx^T.
    The decoder's start: each layer's final state (h0, c0 (N, H) for one decoder layer, (L, N, H)
    for L), or through ``encoder.bridge`` (h, c: Linear + Tanh over all layers' final states side by
    side). A learned attention score's keys (general: hs W; additive: hs Wk + b) are made here once.
    With input feeding, feed0: zeros (N, H).
decoder_step.onnx, prev_token (N,), h, c, [feed (N, H)], hs (N, Ts, H), [keys], src_mask (N, Ts)
        -> log_probs (N, V), h_out, c_out, [feed_out], attention (N, Ts):
    **plain MatMul and elementwise ops**, as in ``AttentionDecoder.step``: one step has no loop
    for the LSTM operator to absorb, and plain ops let the input projection be one Gather from
    attnseq's own decoding table (V, 4H) = embed.W @ Wx + b (Wx's embedding rows with input
    feeding, feed @ the rest added), computed here exactly as ``AttentionDecoder.input_table`` does.
    Then per layer h @ Wh, the four gates, the cell update (layers above the first: their input
    h @ Wx + b); scores of the top h against the keys (hs for the dot score; for the additive
    score v . tanh(h Wq + keys)), Where(src_mask, scores, -inf), Softmax over Ts (padding gets
    weight exactly 0), context = a . hs; the output layer reads [context, h], or with input feeding
    feed_out = tanh([context, h] W_c + b_c); logits = x W + b, or tied to the embedding
    (x W_p + b_p) E^T + b; LogSoftmax.

A GRU model (``cell`` "gru"; modules ``encoder.gru`` ...) has no c anywhere: the encoder's layers are
**the ONNX GRU operator** with ``linear_before_reset=0``, the book's cell, where the reset gate
multiplies h_prev before Wh_h (ONNX's update gate weighs h_prev where attnseq's weighs h~, so
``onnx_gru_weights`` negates the z blocks, an exact change), and the decoder step is the cell of
``gru_cell`` in plain ops (``_gru_cell``). Its manifest has format_version 3.

The graphs are float32 (onnxruntime's LSTM kernel has no float64); the exporter refuses a
float64 checkpoint unless asked to cast it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ConfigError
from ..nn.config import ModelConfig
from .spec import DECODER_STEP, ENCODER, IR_VERSION, OPSET, graph_io, model_options, state_parts
ELEM = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT, "bool": TensorProto.BOOL}


def onnx_gate_order(H: int) -> np.ndarray:
    """Column indices taking attnseq's gate blocks [i, f, o, g] to ONNX's [i, o, f, c]."""
    i, f, o, g = (np.arange(k * H, (k + 1) * H) for k in range(4))
    return np.concatenate([i, o, f, g])


class Weights(dict):
    """The checkpoint's arrays by state_dict name, remembering which ones a graph read."""

    def __init__(self, arrays: dict):
        super().__init__(arrays)
        self.read = set()

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)


class Graph:
    """Nodes and initializers under construction; ``op`` returns its output's name."""

    def __init__(self):
        self.nodes, self.inits, self._count = [], {}, 0

    def const(self, name: str, array) -> str:
        array = np.asarray(array)
        self.inits[name] = array if array.flags.c_contiguous else np.ascontiguousarray(array)   # keeps 0-d 0-d
        return name

    def op(self, op_type: str, inputs: list, out: str | None = None, **attrs) -> str:
        return self.ops(op_type, inputs, [out], **attrs)[0]

    def ops(self, op_type: str, inputs: list, outs: list, **attrs) -> list:
        outs = [o or self._name(op_type) for o in outs]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs

    def _name(self, op_type: str) -> str:
        self._count += 1
        return f"{op_type.lower()}_{self._count}"

    def model(self, name: str, io: dict, doc: str) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(a, k) for k, a in self.inits.items()]
        graph = helper.make_graph(self.nodes, name, _value_infos(io["inputs"]), _value_infos(io["outputs"]), inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                 producer_name="attnseq", doc_string=doc)


def _value_infos(specs: list) -> list:
    return [helper.make_tensor_value_info(s["name"], ELEM[s["dtype"]], s["shape"]) for s in specs]


def _axes(*axes) -> np.ndarray:
    return np.array(axes, dtype=np.int64)


def onnx_gru_weights(Wx, Wh, b):
    """attnseq's GRU (blocks [z, r, h~], h = (1 - z) h_prev + z h~) as ONNX's (W, R, Wb + Rb): the
    same block order, but ONNX's update gate weighs h_prev, H = (1 - z') h~ + z' h_prev, so
    z' = 1 - z = sigmoid(-a_z): the z blocks are negated (exactly). Wx (D, 3H) -> W (3H, D) etc."""
    H = Wh.shape[0]
    sign = np.ones(3 * H, Wx.dtype)
    sign[:H] = -1
    return (Wx * sign).T, (Wh * sign).T, np.concatenate([b * sign, np.zeros(3 * H, b.dtype)])


def _layer_names(prefix: str, layers: int, cell: str = "lstm") -> list:
    """``encoder.lstm``, ``encoder.lstm2`` ... (``gru``, ``gru2`` ...) as the modules are named."""
    return [prefix + (cell if k == 1 else f"{cell}{k}") for k in range(1, layers + 1)]


# -- the encoder ---------------------------------------------------------------------------------
def _rnn_node(g: Graph, w: Weights, name: str, x_tm: str, lengths: str, bidirectional: bool, cell: str):
    """One encoder layer as the ONNX LSTM (or GRU) operator: x_tm (Ts, N, Din) -> y (Ts, N, H) and the
    final state's parts, y_h, y_c (N, H) (a GRU: y_h alone)."""
    dirs = [f"{name}.fw", f"{name}.bw"] if bidirectional else [name]
    Hd = w[f"{dirs[0]}.Wh"].shape[0]                                 # each direction's size
    if cell == "gru":                                               # linear_before_reset=0: the book's cell
        W, R, B = (np.stack(a) for a in zip(*(onnx_gru_weights(w[f"{d}.Wx"], w[f"{d}.Wh"], w[f"{d}.b"])
                                              for d in dirs)))
        attrs, n_out = dict(linear_before_reset=0), 2
    else:
        order = onnx_gate_order(Hd)
        W = np.stack([w[f"{d}.Wx"][:, order].T for d in dirs])      # (dirs, 4Hd, Din)
        R = np.stack([w[f"{d}.Wh"][:, order].T for d in dirs])      # (dirs, 4Hd, Hd)
        B = np.stack([np.concatenate([w[f"{d}.b"][order], np.zeros(4 * Hd, np.float32)]) for d in dirs])  # Wb, Rb
        attrs, n_out = {}, 3
    k = name.replace(".", "_")
    y, *finals = g.ops(cell.upper(), [x_tm, g.const(f"{k}_W", W), g.const(f"{k}_R", R), g.const(f"{k}_B", B),
                                      lengths], [None] * n_out, hidden_size=Hd,
                       direction="bidirectional" if bidirectional else "forward", **attrs)
    if not bidirectional:                                           # y (Ts, 1, N, H), y_h (1, N, H)
        return (g.op("Squeeze", [y, "axis1"]), *(g.op("Squeeze", [f, "axis0"]) for f in finals))
    y = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 2, 1, 3]), "shape_00m"])   # (Ts, N, 2, H/2) -> (Ts, N, H)
    finals = [g.op("Reshape", [g.op("Transpose", [f], perm=[1, 0, 2]), "shape_0m"]) for f in finals]
    return (y, *finals)                                             # [forward, backward] on the last axis


def _start_state(g: Graph, w: Weights, finals: list, o: dict, H: int) -> list:
    """The decoder's h0 (and c0) from each encoder layer's final state: directly, or through the bridge."""
    L, parts = o["decoder_layers"], state_parts(o)
    if o["bidirectional"] or o["encoder_layers"] != L:
        out = []
        for k, part in enumerate(parts):
            x = g.op("Concat", [f[k] for f in finals], axis=1) if len(finals) > 1 else finals[0][k]   # (N, Le*H)
            y = g.op("Add", [g.op("MatMul", [x, g.const(f"bridge_{part}_W", w[f"encoder.bridge.{part}.W"])]),
                             g.const(f"bridge_{part}_b", w[f"encoder.bridge.{part}.b"])])
            y = g.op("Tanh", [y])                                   # (N, L*H)
            if L > 1:
                y = g.op("Transpose", [g.op("Reshape", [y, g.const(f"shape_0_{L}_{H}", _axes(0, L, H))])],
                         perm=[1, 0, 2])                            # (L, N, H)
            out.append(g.op("Identity", [y], f"{part}0"))
        return out
    if L == 1:
        return [g.op("Identity", [finals[0][k]], f"{part}0") for k, part in enumerate(parts)]
    return [g.op("Concat", [g.op("Unsqueeze", [f[k], "axis0"]) for f in finals], f"{part}0", axis=0)
            for k, part in enumerate(parts)]                        # (L, N, H)


def _keys(g: Graph, w: Weights, attention: str, hs: str) -> str:
    """The attention score's keys from hs (N, Ts, H): hs W (general), hs Wk + b (additive)."""
    if attention == "general":
        return g.op("MatMul", [hs, g.const("score_W", w["decoder.attention.weight.W"])], "keys")
    return g.op("Add", [g.op("MatMul", [hs, g.const("key_W", w["decoder.attention.weight.key.W"])]),
                        g.const("key_b", w["decoder.attention.weight.key.b"])], "keys")


def encoder_graph(w: Weights, config: ModelConfig) -> onnx.ModelProto:
    """encoder.onnx from float32 weights ``w`` (state_dict names)."""
    H = config.hidden_size
    o = model_options(config)
    g = Graph()
    for name, axes in (("axis0", (0,)), ("axis1", (1,)), ("shape_00m", (0, 0, -1)), ("shape_0m", (0, -1))):
        g.const(name, _axes(*axes))
    x = g.op("Gather", [g.const("embed_W", w["encoder.embed.W"]), "src_ids"])      # (N, Ts, D)
    x_tm = g.op("Transpose", [x], perm=[1, 0, 2])                                   # (Ts, N, D)
    lengths = g.op("Cast", ["src_lengths"], to=TensorProto.INT32)
    finals = []
    for name in _layer_names("encoder.", o["encoder_layers"], o["cell"]):
        x_tm, *final = _rnn_node(g, w, name, x_tm, lengths, o["bidirectional"], o["cell"])  # (Ts, N, H), (N, H)
        finals.append(final)
    hs = g.op("Transpose", [x_tm], "hs", perm=[1, 0, 2])                            # (N, Ts, H)
    if o["attention"] != "dot":
        _keys(g, w, o["attention"], hs)
    _start_state(g, w, finals, o, H)
    if o["input_feeding"]:
        n = g.op("Slice", [g.op("Shape", ["src_ids"]), g.const("zero", _axes(0)), g.const("one", _axes(1))])
        g.op("ConstantOfShape", [g.op("Concat", [n, g.const("H", _axes(H))], axis=0)], "feed0",
             value=numpy_helper.from_array(np.zeros(1, np.float32)))                # (N, H) zeros
    io = graph_io(H, config.tgt_vocab_size, **o)[ENCODER]
    outs = ", ".join(e["name"] for e in io["outputs"])
    return g.model("attnseq_encoder", io, f"attnseq encoder: src_ids (N, Ts), src_lengths (N,) -> {outs}")


# -- the decoder step -------------------------------------------------------------------------------
def _cell(g: Graph, xw: str, h: str, c: str, Wh: str, H: int):
    """One LSTM step in plain ops: xw (N, 4H) the input's share, h, c (N, H) -> h_new, c_new."""
    gates = g.op("Add", [g.op("MatMul", [h, Wh]), xw])              # (N, 4H), blocks [i, f, o, g]
    a_i, a_f, a_o, a_g = g.ops("Split", [gates, g.const(f"split4_{H}", _axes(H, H, H, H))], [None] * 4, axis=1)
    i, f, o, cand = g.op("Sigmoid", [a_i]), g.op("Sigmoid", [a_f]), g.op("Sigmoid", [a_o]), g.op("Tanh", [a_g])
    c_new = g.op("Add", [g.op("Mul", [f, c]), g.op("Mul", [i, cand])])
    return g.op("Mul", [o, g.op("Tanh", [c_new])]), c_new


def _gru_cell(g: Graph, xw: str, h: str, Wh: np.ndarray, name: str, H: int) -> str:
    """One GRU step in plain ops, as ``gru_cell``: xw (N, 3H) the input's share, h (N, H) -> h_new."""
    x_z, x_r, x_h = g.ops("Split", [xw, g.const(f"split3_{H}", _axes(H, H, H))], [None] * 3, axis=1)
    a_z, a_r = g.ops("Split", [g.op("MatMul", [h, g.const(f"{name}_Wh_zr", Wh[:, :2 * H])]),
                               g.const(f"split2_{H}", _axes(H, H))], [None] * 2, axis=1)
    z, r = g.op("Sigmoid", [g.op("Add", [x_z, a_z])]), g.op("Sigmoid", [g.op("Add", [x_r, a_r])])
    rh = g.op("MatMul", [g.op("Mul", [r, h]), g.const(f"{name}_Wh_h", Wh[:, 2 * H:])])   # (r * h) Wh_h
    cand = g.op("Tanh", [g.op("Add", [x_h, rh])])
    return g.op("Add", [h, g.op("Mul", [z, g.op("Sub", [cand, h])])])   # h + z (h~ - h)


def _scores(g: Graph, w: Weights, attention: str, h: str) -> str:
    """Scores (N, Ts) of the top decoder state h (N, H) against the keys (hs for the dot score)."""
    if attention == "additive":
        q = g.op("Unsqueeze", [g.op("MatMul", [h, g.const("Wq", w["decoder.attention.weight.Wq"])]), "axis1"])
        e = g.op("Tanh", [g.op("Add", [q, "keys"])])               # (N, Ts, A)
        return g.op("MatMul", [e, g.const("v", w["decoder.attention.weight.v"])])   # (N, Ts)
    keys = "hs" if attention == "dot" else "keys"
    return g.op("Squeeze", [g.op("MatMul", [keys, g.op("Unsqueeze", [h, "axis2"])]), "axis2"])   # (N, Ts)


def _logits(g: Graph, w: Weights, x: str, tied: bool) -> str:
    """logits (N, V) from what the output layer reads: x W + b, or (x W_p + b_p) E^T + b when tied."""
    if tied:
        p = g.op("Add", [g.op("MatMul", [x, g.const("proj_W", w["decoder.out.proj.W"])]),
                         g.const("proj_b", w["decoder.out.proj.b"])])          # (N, D)
        x, W = p, g.const("embed_T", w["decoder.embed.W"].T)                    # E^T (D, V)
    else:
        W = g.const("out_W", w["decoder.out.W"])
    return g.op("Add", [g.op("MatMul", [x, W]), g.const("out_b", w["decoder.out.b"])])


def _decoder_layers(g: Graph, w: Weights, o: dict, H: int, D: int) -> list:
    """Every decoder layer's step from prev_token, the state inputs (and feed) -> [[h_l], [c_l]] (a GRU:
    [[h_l]]), the new state's parts per layer, (N, H) each."""
    L, cell, parts = o["decoder_layers"], o["cell"], state_parts(o)
    names = _layer_names("decoder.", L, cell)
    Wx = w[f"{names[0]}.Wx"]
    table = w["decoder.embed.W"] @ Wx[:D] + w[f"{names[0]}.b"]     # (V, 4H) as AttentionDecoder.input_table
    xw = g.op("Gather", [g.const("input_table", table), "prev_token"])             # (N, 4H)
    if o["input_feeding"]:
        xw = g.op("Add", [xw, g.op("MatMul", ["feed", g.const("feed_Wx", Wx[D:])])])   # feed's share
    new = [[] for _ in parts]
    for l, name in enumerate(names):
        if l > 0:                                                   # the layer below's new h as input
            xw = g.op("Add", [g.op("MatMul", [new[0][-1], g.const(f"{name}_Wx", w[f"{name}.Wx"])]),
                              g.const(f"{name}_b", w[f"{name}.b"])])
        state = parts if L == 1 else [g.op("Gather", [p, g.const(f"layer{l}", np.array(l, np.int64))], axis=0)
                                      for p in parts]               # (N, H) each
        if cell == "gru":
            out = [_gru_cell(g, xw, state[0], w[f"{name}.Wh"], name.replace(".", "_"), H)]
        else:
            out = _cell(g, xw, *state, g.const(f"{name}_Wh", w[f"{name}.Wh"]), H)
        for news, x in zip(new, out):
            news.append(x)
    return new


def decoder_step_graph(w: Weights, config: ModelConfig) -> onnx.ModelProto:
    """decoder_step.onnx from float32 weights ``w`` (state_dict names)."""
    H, D = config.hidden_size, config.wordvec_size
    o = model_options(config)
    g = Graph()
    for name, axes in (("axis0", (0,)), ("axis1", (1,)), ("axis2", (2,))):
        g.const(name, _axes(*axes))
    g.const("neg_inf", np.array(-np.inf, dtype=np.float32))
    new = _decoder_layers(g, w, o, H, D)
    h = new[0][-1]
    scores = g.op("Where", ["src_mask", _scores(g, w, o["attention"], h), "neg_inf"])
    a = g.op("Softmax", [scores], "attention", axis=-1)             # (N, Ts), 0 at padding
    context = g.op("Squeeze", [g.op("MatMul", [g.op("Unsqueeze", [a, "axis1"]), "hs"]), "axis1"])   # (N, H)
    x = g.op("Concat", [context, h], axis=1)                        # (N, 2H)
    if o["input_feeding"]:
        x = g.op("Tanh", [g.op("Add", [g.op("MatMul", [x, g.const("Wc", w["decoder.attentional.W"])]),
                                       g.const("bc", w["decoder.attentional.b"])])], "feed_out")   # (N, H)
    g.op("LogSoftmax", [_logits(g, w, x, o["tie_embeddings"])], "log_probs", axis=-1)
    for part, news in zip(state_parts(o), new):
        if len(news) == 1:
            g.op("Identity", [news[0]], f"{part}_out")
        else:
            g.op("Concat", [g.op("Unsqueeze", [s, "axis0"]) for s in news], f"{part}_out", axis=0)   # (L, N, H)
    io = graph_io(H, config.tgt_vocab_size, **o)[DECODER_STEP]
    ins, outs = (", ".join(e["name"] for e in io[k]) for k in ("inputs", "outputs"))
    return g.model("attnseq_decoder_step", io, f"attnseq decoder step: {ins} -> {outs}")


def build_graphs(weights: dict, config: ModelConfig) -> dict:
    """graph name -> checked ModelProto, from float32 weights keyed like ``model.state_dict()``.

    ConfigError when a parameter is read by neither graph (an option these graphs do not express)."""
    w = Weights(weights)
    graphs = {ENCODER: encoder_graph(w, config), DECODER_STEP: decoder_step_graph(w, config)}
    unread = sorted(set(weights) - w.read)
    if unread:
        raise ConfigError(f"parameters {', '.join(unread)} are not read by the ONNX graphs (a model option the "
                          f"export does not express); not exported")
    for model in graphs.values():
        onnx.checker.check_model(model, full_check=True)
    return graphs
