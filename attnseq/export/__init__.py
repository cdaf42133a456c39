"""Export a trained model to ONNX and translate with onnxruntime, without the training package.

``export_onnx(ckpt, out)`` writes a directory: ``encoder.onnx``, ``decoder_step.onnx``, the
tokenizer files and ``manifest.json`` (inputs, outputs, symbolic shapes, opset, special ids,
tokenizers, source reversal, output length rule, checksums); see ``spec`` for its contents and
``onnx_graphs`` for how the graphs are built. ``OnnxTranslator(out).translate(texts)`` runs them
with attnseq's own greedy and beam search. Both need ``pip install 'attnseq[export]'``
(onnx, onnxruntime); importing this package does not.
"""
from ..errors import MissingExtraError
from .exporter import export_onnx
from .runtime import OnnxSeq2seq, OnnxTranslator
from .spec import read_manifest

__all__ = ["export_onnx", "OnnxSeq2seq", "OnnxTranslator", "MissingExtraError", "read_manifest"]
