"""attnseq: sequence-to-sequence with attention on numpy and cupy, no autograd."""
from .attention import Attention, AttentionWeights, WeightedSum
from .backend import get_array_module, gpu_available, to_device, to_numpy
from .decoders import AttentionDecoder
from .encoders import Encoder
from .errors import AttnseqError, CheckpointError, ConfigError, DataError, DeviceError, NonFiniteError
from .layers import LSTM, Dropout, Embedding, Linear, SoftmaxCrossEntropy
from .model import AttentionSeq2seq
from .module import Module
from .plotting import plot_attention
from .search import beam_search
from .optim import SGD, AdaGrad, Adam, ClipGradNorm, Momentum, Nesterov, Optimizer, RMSProp, WeightDecay

__version__ = "0.1.0"

__all__ = [
    "Encoder", "AttentionDecoder", "AttentionSeq2seq", "Module",
    "Embedding", "LSTM", "Linear", "SoftmaxCrossEntropy", "Dropout", "Attention", "AttentionWeights", "WeightedSum",
    "Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam", "ClipGradNorm", "WeightDecay",
    "beam_search", "plot_attention",
    "get_array_module", "gpu_available", "to_device", "to_numpy",
    "AttnseqError", "CheckpointError", "ConfigError", "DataError", "DeviceError", "NonFiniteError",
]
