"""The data side: files, tokenizers, encoding and batching, the built-in task generators, corpus loading."""
