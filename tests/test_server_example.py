"""examples/server/app.py in-process: per-session probabilities equal the model run
directly; sessions are independent, reset, capped and expire."""
import importlib.util
import os
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
with warnings.catch_warnings():           # starlette nags about httpx vs httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from pyrnn.models import LanguageModel  # noqa: E402

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "examples", "server", "app.py")
CHARS = "abcdefgh ."


def _load_app_module():
    spec = importlib.util.spec_from_file_location("pyrnn_server_example", APP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def mod():
    return _load_app_module()


def _model(layers=2):
    return LanguageModel(len(CHARS), embed_size=8, hidden_size=16, num_layers=layers,
                         cell="lstm", seed=7)


def _direct_probs(model, text):
    ids = np.array([[CHARS.index(c)] for c in text], np.int64)
    logits, _ = model.forward(ids)
    z = logits[-1, 0].astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("backend", ["pyrnn", "torch"])
def test_session_probs_equal_model(mod, backend):
    if backend == "torch":
        from _oracle import require_torch
        require_torch()
    model = _model()
    with TestClient(mod.make_app(model, CHARS, backend)) as c:
        r = c.post("/sessions/a/feed", json={"text": "abc"})
        assert r.status_code == 200
        p = np.array(r.json()["probs"])
        np.testing.assert_allclose(p, _direct_probs(model, "abc"), rtol=1e-5, atol=1e-7)
        assert abs(p.sum() - 1) < 1e-9
        # a second client does not disturb the first
        c.post("/sessions/b/feed", json={"text": "hhhh"})
        r = c.post("/sessions/a/feed", json={"ids": [CHARS.index("d"), CHARS.index(" ")]})
        np.testing.assert_allclose(r.json()["probs"], _direct_probs(model, "abcd "),
                                   rtol=1e-5, atol=1e-7)
        top = r.json()["top"]
        assert top[0][1] == pytest.approx(max(r.json()["probs"]))
        # reset starts over
        assert c.post("/sessions/a/reset").json() == {"reset": "a"}
        r = c.post("/sessions/a/feed", json={"text": "e"})
        np.testing.assert_allclose(r.json()["probs"], _direct_probs(model, "e"),
                                   rtol=1e-5, atol=1e-7)


def test_generate_greedy_matches_model(mod):
    model = _model(1)
    with TestClient(mod.make_app(model, CHARS)) as c:
        r = c.post("/sessions/g/generate", json={"text": "ab", "length": 6, "temperature": 0})
        text = r.json()["text"]
    assert len(text) == 6
    want = "ab"
    for _ in range(6):
        want += CHARS[int(np.argmax(_direct_probs(model, want)))]
    assert text == want[2:]


def test_bad_requests_and_session_limits(mod):
    model = _model(1)
    app = mod.make_app(model, CHARS, max_sessions=3, idle_seconds=0.2)
    with TestClient(app) as c:
        assert c.post("/sessions/x/feed", json={"text": "Z"}).status_code == 400
        assert c.post("/sessions/x/feed", json={"ids": [99]}).status_code == 400
        assert c.post("/sessions/x/feed", json={"ids": "a"}).status_code == 400
        assert c.post("/sessions/x/feed", content=b"not json").status_code == 400
        assert c.post("/sessions/x/generate", json={"length": 5}).status_code == 400
        for s in "pqrs":
            c.post(f"/sessions/{s}/feed", json={"text": "a"})
        assert c.get("/health").json()["sessions"] == 3        # capped, LRU evicted
        assert set(app.state.sessions._d) == {"q", "r", "s"}
        time.sleep(0.3)
        c.post("/sessions/t/feed", json={"text": "a"})
        assert set(app.state.sessions._d) == {"t"}             # idle ones expired
        # an evicted session starts from zeros again
        r = c.post("/sessions/p/feed", json={"text": "b"})
        np.testing.assert_allclose(r.json()["probs"], _direct_probs(model, "b"), rtol=1e-5,
                                   atol=1e-7)


def test_train_tiny_learns(mod):
    model, chars = mod.train_tiny(steps=30, hidden=16)
    assert set(chars) == set(mod.CORPUS)
    ids = np.array([[chars.index(c)] for c in mod.CORPUS[:200]], np.int64)
    from pyrnn.losses import cross_entropy
    logits, _ = model.forward(ids[:-1])
    loss, _ = cross_entropy(logits, ids[1:])
    assert loss < np.log(len(chars)) - 0.5          # well below a uniform guess
