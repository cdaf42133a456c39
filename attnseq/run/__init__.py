"""A training or decoding run: options, the trainer, checkpoints and run directories, threads, decoding, metrics."""
