"""A char-level LSTM language model served over HTTP, one pyrnn Stream per session.

    python examples/server/app.py [--model lm.pyrnn] [--backend pyrnn|torch] [--port 8000]

Without --model a tiny model is trained at startup (10-30 s) and saved with
--save if given. --backend torch serves the same weights with PyTorch (one
``torch.nn.LSTM`` step per token under ``inference_mode``), for comparison.

Endpoints (JSON):
  GET  /health                          -> {"ok": true, "backend": ..., "sessions": n}
  GET  /vocab                           -> {"chars": "..."}
  POST /sessions/{sid}/reset            -> {"reset": sid}
  POST /sessions/{sid}/feed     {"text": "ab"} or {"ids": [1, 2]}, optional "top": k
                                        -> {"probs": [...V floats], "top": [[char, p], ...]}
  POST /sessions/{sid}/generate {"length": n, "temperature": t, "seed": s, "text": prime}
                                        -> {"text": "..."}

Sessions: at most --max-sessions (least recently used evicted), dropped after
--idle-seconds without a request. One session's requests are serialised by its
own lock; different sessions step concurrently (a step of a bigger model
releases the GIL; this tiny one's keeps it, which costs less).
Needs: starlette, uvicorn (the ``server`` extra). Not imported by pyrnn itself.
"""
import argparse
import os
import sys
import threading
import time
from collections import OrderedDict

import numpy as np

import pyrnn
from pyrnn.models import LanguageModel
from pyrnn.stream import Stream

CORPUS = (
    "the quick brown fox jumps over the lazy dog. a stream keeps its state between "
    "requests, so each client continues where it stopped. recurrent networks read one "
    "token at a time and carry a hidden state forward; the server steps that state "
    "once per token and returns the probabilities of the next character. "
) * 4


# ---------------------------------------------------------------- model

def train_tiny(text=CORPUS, hidden=64, layers=1, steps=150, seed=0):
    """Train a small char LSTM on ``text``; returns (model, chars)."""
    from pyrnn.losses import cross_entropy
    from pyrnn.optim import Adam
    chars = "".join(sorted(set(text)))
    idx = {c: i for i, c in enumerate(chars)}
    data = np.array([idx[c] for c in text], np.int64)
    model = LanguageModel(len(chars), embed_size=16, hidden_size=hidden, num_layers=layers,
                          cell="lstm", seed=seed)
    opt = Adam(model, lr=1e-2)
    rng = np.random.default_rng(seed)
    T, B = 32, 16
    for _ in range(steps):
        starts = rng.integers(0, len(data) - T - 1, B)
        win = np.stack([data[s:s + T + 1] for s in starts], axis=1)   # (T+1, B)
        model.zero_grad()
        logits, _, backward = model.forward_train(win[:-1])
        _, dlogits = cross_entropy(logits, win[1:])
        backward(dlogits)
        opt.step()
    return model, chars


def load_or_train(path=None, save=None):
    if path:
        model = pyrnn.io.load(path)
        chars = model.metadata["chars"]
    else:
        model, chars = train_tiny()
        if save:
            pyrnn.io.save(model, save, {"chars": chars})
    return model, chars


def _softmax(z):
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


class PyrnnBackend:
    """Per session: a Stream over the model's LSTM; embed and head in NumPy."""
    name = "pyrnn"

    def __init__(self, model):
        self.model = model
        self.emb = model.embed.state_dict()["weight"]
        hd = model.head.state_dict()
        self.w_out, self.b_out = hd["weight"], hd["bias"]

    def new_state(self):
        return Stream(self.model.rnn, batch_size=1)

    def step(self, st, token):
        h = st.step(self.emb[token])
        return self.w_out @ h + self.b_out


class TorchBackend:
    """The same weights served with PyTorch: one nn.LSTM step per token."""
    name = "torch"

    def __init__(self, model):
        import torch
        self.torch = torch
        torch.set_num_threads(1)
        sd = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
        self.embed = torch.nn.Embedding(model.vocab_size, model.embed_size)
        self.rnn = torch.nn.LSTM(model.embed_size, model.hidden_size, model.num_layers)
        self.head = torch.nn.Linear(model.hidden_size, model.vocab_size)
        for name, mod in (("embed", self.embed), ("rnn", self.rnn), ("head", self.head)):
            mod.load_state_dict({k.split(".", 1)[1]: v for k, v in sd.items()
                                 if k.startswith(name + ".")})

    def new_state(self):
        return [None]

    def step(self, st, token):
        torch = self.torch
        with torch.inference_mode():
            e = self.embed(torch.tensor([[token]]))
            y, st[0] = self.rnn(e, st[0])
            return self.head(y[0, 0]).numpy()


# ---------------------------------------------------------------- sessions

class Session:
    def __init__(self, state):
        self.state, self.logits = state, None
        self.lock = threading.Lock()
        self.last = time.monotonic()


class Sessions:
    """Session id -> Session, capped (LRU eviction) with idle expiry."""

    def __init__(self, backend, max_sessions=1000, idle_seconds=600.0):
        self.backend, self.max, self.idle = backend, int(max_sessions), float(idle_seconds)
        self._d = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._d)

    def get(self, sid):
        now = time.monotonic()
        with self._lock:
            while self._d:                       # expire from the idle end
                k, s = next(iter(self._d.items()))
                if now - s.last <= self.idle:
                    break
                del self._d[k]
            s = self._d.get(sid)
            if s is None:
                s = self._d[sid] = Session(self.backend.new_state())
                while len(self._d) > self.max:
                    self._d.popitem(last=False)
            self._d.move_to_end(sid)
            s.last = now
            return s

    def drop(self, sid):
        with self._lock:
            self._d.pop(sid, None)


# ---------------------------------------------------------------- app

def make_app(model, chars, backend="pyrnn", max_sessions=1000, idle_seconds=600.0):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    be = TorchBackend(model) if backend == "torch" else PyrnnBackend(model)
    sessions = Sessions(be, max_sessions, idle_seconds)
    idx = {c: i for i, c in enumerate(chars)}
    V = len(chars)

    def err(msg, code=400):
        return JSONResponse({"error": msg}, status_code=code)

    def to_ids(body):
        if "ids" in body:
            ids = body["ids"]
            if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < V
                                                    for i in ids):
                raise ValueError(f"ids: expected a list of ints in [0, {V})")
            return ids
        text = body.get("text", "")
        if not isinstance(text, str) or any(c not in idx for c in text):
            raise ValueError(f"text: only these characters are known: {chars!r}")
        return [idx[c] for c in text]

    def feed(s, ids):
        with s.lock:
            for t in ids:
                s.logits = be.step(s.state, t)
            return None if s.logits is None else _softmax(s.logits.astype(np.float64))

    def generate(s, prime, length, temperature, seed):
        rng = np.random.default_rng(seed)
        out = []
        with s.lock:
            for t in prime:
                s.logits = be.step(s.state, t)
            for _ in range(length):
                if s.logits is None:
                    raise ValueError("text: the session is empty; give a prime text")
                z = s.logits.astype(np.float64)
                if temperature <= 0:
                    t = int(np.argmax(z))
                else:
                    t = int(rng.choice(V, p=_softmax(z / temperature)))
                out.append(chars[t])
                s.logits = be.step(s.state, t)
        return "".join(out)

    async def body_of(request):
        try:
            b = await request.json()
        except ValueError:
            return {}
        return b if isinstance(b, dict) else {}

    async def health(request):
        return JSONResponse({"ok": True, "backend": be.name, "sessions": len(sessions)})

    async def vocab(request):
        return JSONResponse({"chars": chars})

    async def reset(request):
        sid = request.path_params["sid"]
        sessions.drop(sid)
        return JSONResponse({"reset": sid})

    async def feed_ep(request):
        b = await body_of(request)
        try:
            ids = to_ids(b)
            k = int(b.get("top", 5))
        except (ValueError, TypeError) as e:
            return err(str(e))
        s = sessions.get(request.path_params["sid"])
        p = await run_in_threadpool(feed, s, ids)
        if p is None:
            return err("feed at least one token", 400)
        top = np.argsort(-p)[:max(0, k)]
        return JSONResponse({"probs": p.tolist(),
                             "top": [[chars[i], float(p[i])] for i in top]})

    async def generate_ep(request):
        b = await body_of(request)
        try:
            prime = to_ids(b)
            length = int(b.get("length", 50))
            if not 0 <= length <= 2000:
                raise ValueError("length: expected 0..2000")
            temperature = float(b.get("temperature", 1.0))
            seed = b.get("seed")
            s = sessions.get(request.path_params["sid"])
            text = await run_in_threadpool(generate, s, prime, length, temperature, seed)
        except (ValueError, TypeError) as e:
            return err(str(e))
        return JSONResponse({"text": text})

    app = Starlette(routes=[
        Route("/health", health), Route("/vocab", vocab),
        Route("/sessions/{sid}/reset", reset, methods=["POST"]),
        Route("/sessions/{sid}/feed", feed_ep, methods=["POST"]),
        Route("/sessions/{sid}/generate", generate_ep, methods=["POST"]),
    ])
    app.state.sessions, app.state.backend = sessions, be
    return app


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a LanguageModel saved with pyrnn.io.save (metadata 'chars')")
    p.add_argument("--save", help="where to save the model trained at startup")
    p.add_argument("--backend", choices=["pyrnn", "torch"], default="pyrnn")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-sessions", type=int, default=1000)
    p.add_argument("--idle-seconds", type=float, default=600.0)
    p.add_argument("--threads", type=int, default=1, help="pyrnn compute threads per step")
    a = p.parse_args(argv)
    import uvicorn
    pyrnn.set_num_threads(a.threads)
    model, chars = load_or_train(a.model, a.save)
    app = make_app(model, chars, a.backend, a.max_sessions, a.idle_seconds)
    print(f"serving {a.backend} on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
