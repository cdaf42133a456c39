"""The PyTorch peer of ``attnseq bench``: the same model, recipe and workload, timed the same way.

Run it in its own environment (torch is never a dependency of attnseq)::

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    /tmp/torchenv/bin/python benchmarks/peer_pytorch.py --json        # beside: attnseq bench --json

The workload is attnseq's classic date model: character vocabularies from data/date/train.tsv,
embedding 16, hidden 256, batch 128, every batch padded to the longest source (29) and target (11
decoder steps); nn.LSTM encoder and decoder, dot-product attention over the encoder states with
padding masked, a linear layer on [context, h], mean cross-entropy over real tokens, Adam (lr 1e-3)
with global-norm clipping at 5. ``train_s_per_iter`` is the median of ``--iters`` steps after 3
warm-up steps; greedy decoding runs the 5,000 test sentences for 11 steps in batches of 128.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA = Path(__file__).resolve().parent.parent / "data" / "date"
PAD, BOS, EOS = 0, 1, 2


def read_tsv(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")[:2]) for line in path.read_text(encoding="utf-8").splitlines() if line]


def char_vocab(texts) -> dict[str, int]:
    chars = sorted({c for t in texts for c in t})
    return {c: k + 4 for k, c in enumerate(chars)}      # 0..3: pad, bos, eos, unk


def encode(pairs, sv, tv):
    ts = max(len(s) for s, _ in pairs)
    to = max(len(t) for _, t in pairs) + 2
    src = np.zeros((len(pairs), ts), np.int64)
    tgt = np.zeros((len(pairs), to), np.int64)
    for k, (s, t) in enumerate(pairs):
        src[k, :len(s)] = [sv.get(c, 3) for c in s]
        tgt[k, :len(t) + 2] = [BOS] + [tv.get(c, 3) for c in t] + [EOS]
    return torch.from_numpy(src), torch.from_numpy(tgt)


class Seq2seq(nn.Module):
    def __init__(self, vs: int, vt: int, D: int, H: int):
        super().__init__()
        self.src_embed, self.tgt_embed = nn.Embedding(vs, D), nn.Embedding(vt, D)
        self.encoder = nn.LSTM(D, H, batch_first=True)
        self.decoder = nn.LSTM(D, H, batch_first=True)
        self.out = nn.Linear(2 * H, vt)

    def encode(self, src):
        hs, state = self.encoder(self.src_embed(src))                  # hs (N, Ts, H)
        return hs, state, src != PAD

    def attend(self, hd, hs, mask):
        scores = hd @ hs.transpose(1, 2)                                # (N, To, Ts)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        a = scores.softmax(-1)
        return self.out(torch.cat([a @ hs, hd], -1)), a                 # (N, To, V)

    def forward(self, src, tgt_in):
        hs, state, mask = self.encode(src)
        hd, _ = self.decoder(self.tgt_embed(tgt_in), state)
        return self.attend(hd, hs, mask)[0]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: one per core)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--wordvec-size", type=int, default=16)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train, test = read_tsv(DATA / "train.tsv"), read_tsv(DATA / "test.tsv")
    sv, tv = char_vocab(s for s, _ in train), char_vocab(t for _, t in train)
    src, tgt = encode(train, sv, tv)
    test_src, test_tgt = encode(test, sv, tv)
    N = args.batch_size
    model = Seq2seq(len(sv) + 4, len(tv) + 4, args.wordvec_size, args.hidden_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD)
    rng = np.random.default_rng(0)

    def step():
        idx = torch.from_numpy(rng.permutation(len(src))[:N])
        s, t = src[idx].to(device), tgt[idx].to(device)
        logits = model(s, t[:, :-1])
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=False)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.iters):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    s_iter = statistics.median(times)

    steps = test_tgt.shape[1] - 2                                       # 10 characters + eos

    @torch.no_grad()
    def greedy():
        model.eval()
        for a in range(0, len(test_src), 128):
            s = test_src[a:a + 128].to(device)
            hs, state, mask = model.encode(s)
            tok = torch.full((len(s), 1), BOS, dtype=torch.long, device=device)
            for _ in range(steps + 1):
                hd, state = model.decoder(model.tgt_embed(tok), state)
                tok = model.attend(hd, hs, mask)[0].argmax(-1)
        sync(device)
        model.train()

    g_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        greedy()
        g_times.append(time.perf_counter() - t0)
    t_greedy = statistics.median(g_times)
    n_batches = len(src) // N
    out = dict(peer=f"pytorch {torch.__version__}", device=args.device, cpu=cpu_model(), cores=os.cpu_count(),
               torch_threads=torch.get_num_threads(),
               workload=f"date classic: emb {args.wordvec_size}, hidden {args.hidden_size}, batch {N}, "
                        f"src {src.shape[1]}, tgt {tgt.shape[1] - 1} (padded)",
               train_s_per_iter=s_iter, train_s_per_epoch=s_iter * n_batches, train_samples_per_s=N / s_iter,
               greedy_s=t_greedy, greedy_n=len(test_src), greedy_sent_per_s=len(test_src) / t_greedy)
    if args.json:
        print(json.dumps(out))
    else:
        w = max(map(len, out))
        print("\n".join(f"{k:<{w}}  {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
