"""Load test of attnseq serve: throughput, latency and peak RSS at 1, 8 and 64 concurrent clients.

Starts ``attnseq serve`` on 127.0.0.1 (a free port), then for each concurrency level runs that many
async httpx clients for a fixed time (and at most --max-requests requests), each sending one sentence
per request, round robin over the sentences of --data; a client told 503 waits Retry-After seconds.
Reports sentences/s, p50/p99 latency, answers by status, outputs that differ from translate's, and the
server's peak RSS during the level (VmHWM, reset before each level through /proc/PID/clear_refs).
The ceiling is ``attnseq translate`` on the same sentences as a file: the whole command, and the
``translate()`` call alone (what the command runs after loading the model).

Loopback only, bounded in time and requests; it stops the server (SIGTERM) when done. The client
runs on the same CPU as the server. Run it through /work/tools/measure, one at a time:

    python benchmarks/serve_load.py --ckpt RUN --data FILE [--n 1000] [--duration 15] [--tight-queue 16]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def read_sources(path: str, n: int) -> list[str]:
    from attnseq.data.io import read_pairs
    return [s for s, _ in read_pairs(path)][:n]


def ceiling(ckpt: str, sources: list[str]) -> dict:
    """``attnseq translate --input FILE`` timed as a whole command, and its translate() call alone."""
    from attnseq.run.inference import Translator
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "src.txt"
        src.write_text("".join(s + "\n" for s in sources), encoding="utf-8")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "attnseq.cli", "translate", "--ckpt", ckpt, "--input", str(src),
                        "--output", str(Path(d) / "out.txt")], check=True)
        whole = time.perf_counter() - start
        outputs = (Path(d) / "out.txt").read_text(encoding="utf-8").splitlines()
    tr = Translator(ckpt)
    tr.translate(sources[:64])                                          # warm (the kernels compile once)
    start = time.perf_counter()
    again = [t.text for t in tr.translate(sources)]
    alone = time.perf_counter() - start
    assert again == outputs, "translate() and attnseq translate disagree"
    return {"n": len(sources), "command_s": whole, "command_sps": len(sources) / whole,
            "translate_s": alone, "translate_sps": len(sources) / alone, "outputs": dict(zip(sources, outputs))}


def start_server(args, extra: list[str]):
    cmd = [sys.executable, "-m", "attnseq.cli", "serve", "--ckpt", args.ckpt, "--port", "0", *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    found = re.search(r"http://\S+", line)
    if not found:
        p.kill()
        raise SystemExit(f"attnseq serve did not start: {line!r}")
    return p, found[0]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")                 # VmHWM back to the current RSS
    except OSError:
        pass


async def load(url: str, sources: list[str], clients: int, duration: float, max_requests: int, want: dict) -> dict:
    """``clients`` virtual clients, each an httpx.AsyncClient of its own with one keep-alive connection
    (one pool of many connections costs httpx more CPU per request than the server spends); each sends
    one warm-up request, then all start together for ``duration`` seconds."""
    import httpx
    latencies, statuses, wrong, sent = [], {}, 0, 0
    go, window = asyncio.Event(), {}

    async def client(k: int):
        nonlocal sent, wrong
        i = k
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as c:
            await c.post("v1/translate", json={"texts": [sources[k % len(sources)]]})   # not counted
            await go.wait()
            while time.perf_counter() < window["stop"] and sent < max_requests:
                sent += 1
                text = sources[i % len(sources)]
                i += clients
                start = time.perf_counter()
                r = await c.post("v1/translate", json={"texts": [text]})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                    wrong += r.json()["translations"][0]["text"] != want[text]
                elif r.status_code == 503:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    tasks = [asyncio.ensure_future(client(k)) for k in range(clients)]
    await asyncio.sleep(1.0)                                            # the warm-up requests
    window["stop"] = (start := time.perf_counter()) + duration
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"clients": clients, "seconds": elapsed, "requests": sum(statuses.values()), "statuses": statuses,
            "sps": len(latencies) / elapsed, "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None, "wrong": wrong}


def run_levels(args, sources, want, levels, extra, label) -> list[dict]:
    p, url = start_server(args, extra)
    rows = []
    try:
        for clients in levels:
            reset_peak(p.pid)
            row = asyncio.run(load(url, sources, clients, args.duration, args.max_requests, want))
            row.update(peak_rss_mib=peak_rss_mib(p.pid), server=label)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(60)
    return rows


def table(ceil: dict, rows: list[dict]) -> str:
    out = ["| clients | server | sentences/s | p50 ms | p99 ms | answers | differ from translate | peak RSS MiB |",
           "|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        answers = ", ".join(f"{n} × {s}" for s, n in sorted(r["statuses"].items()))
        out.append(f"| {r['clients']} | {r['server']} | {r['sps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{answers} | {r['wrong']} | {r['peak_rss_mib']:.0f} |")
    out.append(f"| file | `attnseq translate` (whole command) | {ceil['command_sps']:,.0f} | | | {ceil['n']} lines "
               "| | |")
    out.append(f"| file | its `translate()` call alone | {ceil['translate_sps']:,.0f} | | | | | |")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, metavar="RUN")
    p.add_argument("--data", required=True, metavar="FILE", help="TSV pairs: the sources are sent")
    p.add_argument("--n", type=int, default=1000, help="sentences taken from --data (1000)")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per concurrency level (15)")
    p.add_argument("--max-requests", type=int, default=50_000, help="requests per level at most (50000)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--tight-queue", type=int, metavar="N",
                   help="also run 64 clients against a server with --max-queue N, to see its 503s")
    p.add_argument("--json", metavar="FILE", help="write the results here too")
    args = p.parse_args(argv)
    sources = read_sources(args.data, args.n)
    ceil = ceiling(args.ckpt, sources)
    print(json.dumps({k: v for k, v in ceil.items() if k != "outputs"}), file=sys.stderr, flush=True)
    rows = run_levels(args, sources, ceil["outputs"], args.clients, [], "defaults")
    if args.tight_queue:
        rows += run_levels(args, sources, ceil["outputs"], [64],
                           ["--max-queue", str(args.tight_queue), "--max-texts", "1"],
                           f"--max-queue {args.tight_queue}")
    from attnseq.bench import cpu_class, cpu_model
    cpu = f"{cpu_model()} ({cpu_class()}), {os.cpu_count()} CPUs, client and server on the same machine"
    print(f"{args.ckpt} on {args.data}; {cpu}\n" + table(ceil, rows))
    if args.json:
        ceiling_row = {k: v for k, v in ceil.items() if k != "outputs"}
        Path(args.json).write_text(json.dumps({"cpu": cpu, "ceiling": ceiling_row, "levels": rows}, indent=1))


if __name__ == "__main__":
    main()
