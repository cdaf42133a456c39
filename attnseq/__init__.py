"""attnseq: sequence-to-sequence with attention on numpy and cupy, no autograd."""
from .nn.attention import Attention, AttentionWeights, WeightedSum
from .nn.backend import get_array_module, gpu_available, to_device, to_numpy
from .nn.decoders import AttentionDecoder
from .nn.encoders import Encoder
from .errors import AttnseqError, CheckpointError, ConfigError, DataError, DeviceError, NonFiniteError, TrainingStopped
from .explorer import explore
from .explorer.history import explore_history
from .nn.layers import Dropout, Embedding, Linear, SoftmaxCrossEntropy
from .nn.gru import GRU
from .nn.lstm import LSTM
from .nn.model import AttentionSeq2seq
from .nn.module import Module
from .plotting import plot_attention
from .run.decoding import beam_search
from .run.inference import score, translate
from .nn.optim import SGD, AdaGrad, Adam, ClipGradNorm, Momentum, Nesterov, Optimizer, RMSProp, WeightDecay

__version__ = "0.1.0"

__all__ = [
    "Encoder", "AttentionDecoder", "AttentionSeq2seq", "Module",
    "Embedding", "LSTM", "GRU", "Linear", "SoftmaxCrossEntropy", "Dropout", "Attention", "AttentionWeights", "WeightedSum",
    "Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp", "Adam", "ClipGradNorm", "WeightDecay",
    "beam_search", "plot_attention", "explore", "explore_history", "translate", "score",
    "get_array_module", "gpu_available", "to_device", "to_numpy",
    "AttnseqError", "CheckpointError", "ConfigError", "DataError", "DeviceError", "NonFiniteError", "TrainingStopped",
]
