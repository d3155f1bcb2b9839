"""HTTP overhead of `ember serve`: /v1/chat/completions vs calling the engine in process, same run.

For 1, 8 and 32 concurrent clients, each side serves the same requests (SmolLM2-135M, the same chat
prompt, `max_tokens` greedy tokens with eos ignored, so every request does the same work):

- in process: client threads call `EmberBackend.chat` on one shared backend (the engine batches them);
- HTTP: `ember serve` in a subprocess with the same engine settings; client threads post non-streaming
  requests with httpx (keep-alive), so JSON, HTTP, the server's queue and worker threads are all counted.

Prints requests/s, p50/p99 latency and CPU seconds per request per level, and the HTTP overhead
(in-process req/s / HTTP req/s - 1; target at 8 clients: <= 10 %), also as extra CPU per request. Both
sides are loaded at once but run one after the other, alternating level by level for `--rounds` rounds
(best of each side kept), so the machine's load drifts alike for both.

    python benchmarks/bench_server.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / ".ember" / "models" / "smollm2"
MESSAGES = [{"role": "user", "content": "Write a short poem about the sea and the wind."}]
KV_MB, MAX_SEQS = 1024, 64  # the settings defaults, used by both sides


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(clients: int, requests: int, call: Callable[[], None], server_pid: int | None = None) -> dict:
    """`requests` calls spread over `clients` threads: requests/s over the wall time, per-call latency, and
    CPU seconds per request (this process, plus the server's when there is one). On a machine shared with
    other work the wall figures swing with its load; the CPU figures much less."""
    latencies: list[float] = []
    lock = threading.Lock()
    left = [requests]

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            t = time.perf_counter()
            call()
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    cpu0 = time.process_time() + (proc_cpu_s(server_pid) if server_pid else 0.0)
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() + (proc_cpu_s(server_pid) if server_pid else 0.0) - cpu0
    return {"clients": clients, "requests": requests, "wall_s": wall, "rps": requests / wall,
            "cpu_s_per_request": cpu / requests,
            "p50_s": statistics.median(latencies), "p99_s": percentile(latencies, 0.99)}


class InProcess:
    """The engine in this process: client threads call `EmberBackend.chat` directly."""

    def __init__(self, tokens: int) -> None:
        import torch

        from ember.model.backends.ember import EmberBackend
        from ember.model.engine.llm_engine import EngineConfig
        from ember.model.sampling_params import SamplingParams

        torch.set_num_threads(os.cpu_count() or 1)
        self.backend = EmberBackend.from_path(MODEL, dtype="auto", device="cpu",
                                              config=EngineConfig(kv_cache_bytes=KV_MB << 20, max_num_seqs=MAX_SEQS))
        self.params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        self.call()  # warm-up (and the prompt's prefix cache, as on the server)

    def call(self) -> None:
        self.backend.chat(MESSAGES, self.params)

    def one_token(self) -> None:
        from ember.model.sampling_params import SamplingParams

        self.backend.chat(MESSAGES, SamplingParams(max_tokens=1, temperature=0))

    def close(self) -> None:
        self.backend.close()


class OverHttp:
    """`ember serve` in a subprocess with the same engine settings; httpx clients, one per thread."""

    def __init__(self, tokens: int) -> None:
        data = Path(tempfile.mkdtemp(prefix="ember-bench-"))
        (data / "models").mkdir()
        (data / "models" / "smollm2").symlink_to(MODEL)
        port = 18000 + os.getpid() % 1000
        env = {**os.environ, "EMBER_DATA_DIR": str(data), "EMBER_ENGINE__KV_CACHE_MB": str(KV_MB),
               "EMBER_ENGINE__MAX_NUM_SEQS": str(MAX_SEQS), "EMBER_SERVER__MAX_CONCURRENT": "64",
               "EMBER_SERVER__MAX_QUEUED": "64"}
        self.server = subprocess.Popen([sys.executable, "-m", "ember.platform.cli.app", "serve", "--port", str(port)],
                                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{port}"
        self.body = {"model": "smollm2", "messages": MESSAGES, "max_tokens": tokens, "temperature": 0,
                     "ignore_eos": True}
        self.tokens = tokens
        self.local = threading.local()
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or self.server.poll() is not None:
                err = self.server.stderr.read().decode() if self.server.stderr else ""
                raise RuntimeError(f"ember serve did not start: {err}")
            time.sleep(0.2)
        self.call()  # warm-up

    def call(self) -> None:
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(base_url=self.url, timeout=600)
        r = self.local.client.post("/v1/chat/completions", json=self.body)
        r.raise_for_status()
        assert r.json()["usage"]["completion_tokens"] == self.tokens

    def one_token(self) -> None:
        r = self.local.client.post("/v1/chat/completions", json={**self.body, "max_tokens": 1})
        r.raise_for_status()

    def close(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests per level")
    ap.add_argument("--tokens", type=int, default=16, help="tokens generated per request")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per level; the best of each side")
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    args = ap.parse_args()
    scale = 1 if args.quick else 2
    levels = [(1, 6 * scale), (8, 24 * scale), (32, 64 * scale)]
    print(f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}; "
          f"{args.tokens} tokens per request; load average {os.getloadavg()[0]:.1f}", flush=True)
    ours, served = InProcess(args.tokens), OverHttp(args.tokens)
    inproc: list[dict] = []
    http: list[dict] = []
    try:  # alternate the sides level by level, so a change in the machine's load hits both alike
        fixed: dict[str, list[float]] = {"in_process": [], "http": []}
        for _ in range(30):  # fixed cost per request: 1-token answers (a cached prefill), alternating sides
            for side, fn in (("in_process", ours.one_token), ("http", served.one_token)):
                t = time.perf_counter()
                fn()
                fixed[side].append(time.perf_counter() - t)
        for c, n in levels:
            runs = [(drive(c, n, ours.call), drive(c, n, served.call, served.server.pid)) for _ in range(args.rounds)]
            inproc.append(max((a for a, _ in runs), key=lambda r: r["rps"]))
            http.append(max((b for _, b in runs), key=lambda r: r["rps"]))
    finally:
        ours.close()
        served.close()
    print(f"{'clients':>7} {'requests':>8} | {'in-process req/s':>16} {'p50 s':>6} {'p99 s':>6} {'CPU s/req':>9} | "
          f"{'HTTP req/s':>10} {'p50 s':>6} {'p99 s':>6} {'CPU s/req':>9} | {'overhead':>8} {'CPU overhead':>12}")
    for a, b in zip(inproc, http, strict=True):
        overhead = a["rps"] / b["rps"] - 1
        cpu_overhead = b["cpu_s_per_request"] / a["cpu_s_per_request"] - 1
        print(f"{a['clients']:>7} {a['requests']:>8} | {a['rps']:>16.2f} {a['p50_s']:>6.2f} {a['p99_s']:>6.2f} "
              f"{a['cpu_s_per_request']:>9.3f} | {b['rps']:>10.2f} {b['p50_s']:>6.2f} {b['p99_s']:>6.2f} "
              f"{b['cpu_s_per_request']:>9.3f} | {overhead:>+8.1%} {cpu_overhead:>+12.1%}")
    own, web = statistics.median(fixed["in_process"]), statistics.median(fixed["http"])
    print(f"1-token request, median of 30 (alternating): in process {own * 1000:.1f} ms, HTTP {web * 1000:.1f} ms, "
          f"fixed HTTP cost {(web - own) * 1000:+.1f} ms per request")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"in_process": inproc, "http": http, "tokens": args.tokens,
                                         "one_token_s": fixed}, indent=2))


if __name__ == "__main__":
    main()
