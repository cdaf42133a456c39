"""The two ONNX graphs of an AttentionSeq2seq, built from its arrays with onnx's helper API.

No tracing and no torch: each graph is written node by node from the checkpoint's parameters
(``model.state_dict()``: ``encoder.embed.W`` (Vs, D), ``encoder.lstm.Wx`` (D, 4H), ``.Wh`` (H, 4H),
``.b`` (4H), the same under ``decoder.``, and ``decoder.out.W`` (2H, V), ``.b`` (V)).

encoder.onnx, src_ids (N, Ts), src_lengths (N,) -> hs (N, Ts, H), h0, c0 (N, H):
    Gather (embedding) -> Transpose to time-major -> **the ONNX LSTM operator** -> back to (N, Ts, H).
    The encoder is a recurrence over Ts, and the LSTM operator is that recurrence as one node
    which every runtime implements natively (onnxruntime on CPU, mobile and web, TensorRT,
    OpenVINO...). Its ``sequence_lens`` input stops each row at its own length, so Y_h / Y_c are
    the state at each row's last real token, which is attnseq's rule; hs past a row's length
    comes out as zeros (attnseq computes values there; attention masks them either way).
    Writing the recurrence by hand would need a Scan or Loop subgraph, which runtimes support
    less widely and run slower. The cost is a reordering of the weights: attnseq orders the
    gates [i, f, o, g] with Wx (D, 4H), ONNX [i, o, f, c] with W = (1, 4H, D), i.e. Wx^T.
decoder_step.onnx, prev_token (N,), h, c (N, H), hs (N, Ts, H), src_mask (N, Ts)
        -> log_probs (N, V), h_out, c_out (N, H), attention (N, Ts):
    **plain MatMul and elementwise ops**, as in ``AttentionDecoder.step``: one step has no loop
    for the LSTM operator to absorb, and plain ops let the input projection be one Gather from
    attnseq's own decoding table (V, 4H) = embed.W @ Wx + b, computed here exactly as
    ``AttentionDecoder.input_table`` does. Then h @ Wh, the four gates, the cell update;
    dot-product scores hs . h, Where(src_mask, scores, -inf), Softmax over Ts (padding gets
    weight exactly 0), context = a . hs, logits = [context, h] @ W + b, LogSoftmax.

The graphs are float32 (onnxruntime's LSTM kernel has no float64); the exporter refuses a
float64 checkpoint unless asked to cast it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .spec import DECODER_STEP, ENCODER, IR_VERSION, OPSET, graph_io

# the model config keys (AttentionSeq2seq.config) that these graphs express; any other key is a
# model option the export does not know and is refused
KNOWN_MODEL_KEYS = {"src_vocab_size", "tgt_vocab_size", "wordvec_size", "hidden_size", "dropout", "init", "dtype",
                    "seed", "pad_id", "bos_id", "eos_id"}
PARAMS = ("encoder.embed.W", "encoder.lstm.Wx", "encoder.lstm.Wh", "encoder.lstm.b",
          "decoder.embed.W", "decoder.lstm.Wx", "decoder.lstm.Wh", "decoder.lstm.b", "decoder.out.W", "decoder.out.b")
ELEM = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT, "bool": TensorProto.BOOL}


def onnx_gate_order(H: int) -> np.ndarray:
    """Column indices taking attnseq's gate blocks [i, f, o, g] to ONNX's [i, o, f, c]."""
    i, f, o, g = (np.arange(k * H, (k + 1) * H) for k in range(4))
    return np.concatenate([i, o, f, g])


def _value_infos(specs: list) -> list:
    return [helper.make_tensor_value_info(s["name"], ELEM[s["dtype"]], s["shape"]) for s in specs]


def _model(nodes, name: str, io: dict, initializers: dict, doc: str) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), k) for k, a in initializers.items()]
    graph = helper.make_graph(nodes, name, _value_infos(io["inputs"]), _value_infos(io["outputs"]), inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="attnseq", doc_string=doc)
    return model


def _axes(*axes) -> np.ndarray:
    return np.array(axes, dtype=np.int64)


def encoder_graph(w: dict, config: dict) -> onnx.ModelProto:
    """encoder.onnx from float32 weights ``w`` (state_dict names)."""
    H = config["hidden_size"]
    order = onnx_gate_order(H)
    Wx, Wh, b = w["encoder.lstm.Wx"], w["encoder.lstm.Wh"], w["encoder.lstm.b"]
    inits = {
        "embed_W": w["encoder.embed.W"],                                    # (Vs, D)
        "lstm_W": Wx[:, order].T[None],                                     # (1, 4H, D)
        "lstm_R": Wh[:, order].T[None],                                     # (1, 4H, H)
        "lstm_B": np.concatenate([b[order], np.zeros(4 * H, b.dtype)])[None],  # (1, 8H): Wb then Rb
        "axis0": _axes(0), "axis1": _axes(1),
    }
    n = helper.make_node
    nodes = [
        n("Gather", ["embed_W", "src_ids"], ["x"]),                         # (N, Ts, D)
        n("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]),                    # (Ts, N, D)
        n("Cast", ["src_lengths"], ["lengths32"], to=TensorProto.INT32),
        n("LSTM", ["x_tm", "lstm_W", "lstm_R", "lstm_B", "lengths32"], ["y", "y_h", "y_c"],
          hidden_size=H, direction="forward"),                              # y (Ts, 1, N, H), y_h (1, N, H)
        n("Squeeze", ["y", "axis1"], ["y_tm"]),                             # (Ts, N, H)
        n("Transpose", ["y_tm"], ["hs"], perm=[1, 0, 2]),                   # (N, Ts, H)
        n("Squeeze", ["y_h", "axis0"], ["h0"]),                             # (N, H)
        n("Squeeze", ["y_c", "axis0"], ["c0"]),
    ]
    io = graph_io(H, config["tgt_vocab_size"])[ENCODER]
    return _model(nodes, "attnseq_encoder", io, inits,
                  "attnseq encoder: src_ids (N, Ts), src_lengths (N,) -> hs (N, Ts, H), h0, c0 (N, H)")


def decoder_step_graph(w: dict, config: dict) -> onnx.ModelProto:
    """decoder_step.onnx from float32 weights ``w`` (state_dict names)."""
    H = config["hidden_size"]
    table = w["decoder.embed.W"] @ w["decoder.lstm.Wx"] + w["decoder.lstm.b"]   # as AttentionDecoder.input_table
    inits = {
        "input_table": table,                                               # (V, 4H)
        "lstm_Wh": w["decoder.lstm.Wh"],                                    # (H, 4H)
        "out_W": w["decoder.out.W"], "out_b": w["decoder.out.b"],           # (2H, V), (V,)
        "neg_inf": np.array(-np.inf, dtype=np.float32),
        "axis1": _axes(1), "axis2": _axes(2), "split4": _axes(H, H, H, H),
    }
    n = helper.make_node
    nodes = [
        n("Gather", ["input_table", "prev_token"], ["xw"]),                 # (N, 4H)
        n("MatMul", ["h", "lstm_Wh"], ["hw"]),
        n("Add", ["hw", "xw"], ["gates"]),                                  # (N, 4H), blocks [i, f, o, g]
        n("Split", ["gates", "split4"], ["a_i", "a_f", "a_o", "a_g"], axis=1),
        n("Sigmoid", ["a_i"], ["g_i"]), n("Sigmoid", ["a_f"], ["g_f"]),
        n("Sigmoid", ["a_o"], ["g_o"]), n("Tanh", ["a_g"], ["g_g"]),
        n("Mul", ["g_f", "c"], ["fc"]), n("Mul", ["g_i", "g_g"], ["ig"]),
        n("Add", ["fc", "ig"], ["c_out"]),                                  # (N, H)
        n("Tanh", ["c_out"], ["tc"]),
        n("Mul", ["g_o", "tc"], ["h_out"]),                                 # (N, H)
        n("Unsqueeze", ["h_out", "axis2"], ["h_col"]),                      # (N, H, 1)
        n("MatMul", ["hs", "h_col"], ["scores3"]),                          # (N, Ts, 1)
        n("Squeeze", ["scores3", "axis2"], ["scores"]),                     # (N, Ts)
        n("Where", ["src_mask", "scores", "neg_inf"], ["scores_masked"]),
        n("Softmax", ["scores_masked"], ["attention"], axis=-1),            # (N, Ts), 0 at padding
        n("Unsqueeze", ["attention", "axis1"], ["a_row"]),                  # (N, 1, Ts)
        n("MatMul", ["a_row", "hs"], ["context3"]),                         # (N, 1, H)
        n("Squeeze", ["context3", "axis1"], ["context"]),                   # (N, H)
        n("Concat", ["context", "h_out"], ["cat"], axis=1),                 # (N, 2H)
        n("MatMul", ["cat", "out_W"], ["cat_W"]),
        n("Add", ["cat_W", "out_b"], ["logits"]),                           # (N, V)
        n("LogSoftmax", ["logits"], ["log_probs"], axis=-1),
    ]
    io = graph_io(H, config["tgt_vocab_size"])[DECODER_STEP]
    return _model(nodes, "attnseq_decoder_step", io, inits,
                  "attnseq decoder step: prev_token (N,), h, c (N, H), hs (N, Ts, H), src_mask (N, Ts) "
                  "-> log_probs (N, V), h_out, c_out (N, H), attention (N, Ts)")


def build_graphs(weights: dict, config: dict) -> dict:
    """graph name -> checked ModelProto, from float32 weights keyed like ``model.state_dict()``."""
    graphs = {ENCODER: encoder_graph(weights, config), DECODER_STEP: decoder_step_graph(weights, config)}
    for model in graphs.values():
        onnx.checker.check_model(model, full_check=True)
    return graphs
