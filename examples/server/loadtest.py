"""Bounded load test of app.py: pyrnn vs PyTorch serving the same weights.

    python examples/server/loadtest.py [--requests 400] [--levels 1,8,32]

Trains (or loads with --model) one model, saves it, starts `app.py --backend pyrnn`
and `app.py --backend torch` on 127.0.0.1 (only; there is no host option), and for
each concurrency level c runs c clients, each with its own session, feeding one
token per request until --requests requests are done. Prints p50/p99 latency and
requests/s per backend and level, then stops the servers it started.
"""
import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))


def start_server(backend, model_path, port, threads):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "app.py"), "--backend", backend,
                          "--model", model_path, "--port", str(port),
                          "--threads", str(threads)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{backend} server exited: {p.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return p
        except httpx.HTTPError:
            time.sleep(0.2)
    p.terminate()
    raise RuntimeError(f"{backend} server did not start on {HOST}:{port}")


async def run_level(port, conc, n_requests, vocab, tokens=1):
    import httpx
    lat = []
    left = [n_requests]
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits,
                                 timeout=30) as client:
        async def worker(w):
            rng = np.random.default_rng(w)
            sid = f"c{conc}-{w}"
            await client.post(f"/sessions/{sid}/reset")
            while left[0] > 0:
                left[0] -= 1
                t0 = time.perf_counter()
                r = await client.post(f"/sessions/{sid}/feed",
                                      json={"ids": rng.integers(vocab, size=tokens).tolist(),
                                            "top": 1})
                lat.append(time.perf_counter() - t0)
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(conc)))
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "rps": len(lat) / wall, "n": len(lat)}


def main(argv=None):
    sys.path.insert(0, HERE)
    import app
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="saved LanguageModel (default: train a tiny one)")
    p.add_argument("--requests", type=int, default=400, help="requests per level (<= 20000)")
    p.add_argument("--levels", default="1,8,32")
    p.add_argument("--tokens", type=int, default=1, help="tokens fed per request (1..256)")
    p.add_argument("--port", type=int, default=8761, help="first port; the next one too")
    p.add_argument("--threads", type=int, default=1, help="pyrnn threads in the server")
    a = p.parse_args(argv)
    if not 1 <= a.requests <= 20000:
        p.error("--requests: 1..20000")
    if not 1 <= a.tokens <= 256:
        p.error("--tokens: 1..256")
    levels = [int(v) for v in a.levels.split(",")]
    if any(not 1 <= c <= 256 for c in levels):
        p.error("--levels: each in 1..256")
    with tempfile.TemporaryDirectory() as d:
        path = a.model
        if not path:
            path = os.path.join(d, "lm.pyrnn")
            app.load_or_train(None, save=path)
        import pyrnn
        vocab = len(pyrnn.io.load(path).metadata["chars"])
        results = {}
        for k, backend in enumerate(["pyrnn", "torch"]):
            srv = start_server(backend, path, a.port + k, a.threads)
            try:
                asyncio.run(run_level(a.port + k, 4, 100, vocab))     # warm-up
                for c in levels:
                    results[backend, c] = asyncio.run(run_level(a.port + k, c, a.requests, vocab,
                                                                a.tokens))
                    r = results[backend, c]
                    print(f"{backend:6s} c={c:3d}  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms"
                          f"  {r['rps']:8.1f} req/s", file=sys.stderr, flush=True)
            finally:
                srv.terminate()
                srv.wait(10)
    load = os.getloadavg()[0]
    print(f"\n{a.requests} requests per level, {a.tokens} token(s) each, load average {load:.1f}\n")
    print("| concurrency | pyrnn p50 ms | pyrnn p99 ms | pyrnn req/s "
          "| torch p50 ms | torch p99 ms | torch req/s |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        x, t = results["pyrnn", c], results["torch", c]
        print(f"| {c} | {x['p50']:.2f} | {x['p99']:.2f} | {x['rps']:.0f} "
              f"| {t['p50']:.2f} | {t['p99']:.2f} | {t['rps']:.0f} |")


if __name__ == "__main__":
    main()
