"""Optimizers and schedules against torch.optim, step by step, in float64."""
import json

import numpy as np
import pytest

from pyrnn import optim
from pyrnn.nn import Linear, Module, Sequential
from _oracle import require_torch

SHAPES = {"weight": (4, 3), "bias": (4,)}
STEPS = 20


class _Params(Module):
    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.dtype = np.dtype(np.float64)
        self._init_params({k: rng.standard_normal(s) for k, s in SHAPES.items()})
        self.updated = 0

    def params_updated(self):
        self.updated += 1


def _grad_seq(seed=1):
    rng = np.random.default_rng(seed)
    # varied magnitudes so eps, amsgrad's max and centering all matter
    return [{k: rng.standard_normal(s) * (0.1 + 3 * (i % 4 == 0)) for k, s in SHAPES.items()}
            for i in range(STEPS)]


def _run_pair(torch, ours_cls, torch_cls, kw, tkw=None, steps=STEPS, sched=None):
    m = _Params()
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in m.params.items()}
    opt = ours_cls(m, **kw)
    topt = torch_cls(list(tp.values()), **(tkw if tkw is not None else kw))
    for i, gs in enumerate(_grad_seq()[:steps]):
        for k, g in gs.items():
            m.grads[k][...] = g
            tp[k].grad = torch.tensor(g)
        opt.step()
        topt.step()
        for k in SHAPES:
            np.testing.assert_allclose(m.params[k], tp[k].detach().numpy(),
                                       rtol=1e-12, atol=1e-13, err_msg=f"step {i} {k}")
    assert m.updated == steps
    return m, opt


CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.9), maximize=True)),  # lerp weight > 0.5
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.3, amsgrad=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
    ("RMSprop", dict(lr=0.001, alpha=0.3, centered=True, eps=1e-4)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.02,
                     initial_accumulator_value=0.5, eps=1e-6)),
]


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_optimizer_matches_torch(name, kw):
    torch = require_torch()
    _run_pair(torch, getattr(optim, name), getattr(torch.optim, name), kw)


def test_defaults_match_torch():
    torch = require_torch()
    import inspect
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
        ours = inspect.signature(getattr(optim, name)).parameters
        theirs = inspect.signature(getattr(torch.optim, name)).parameters
        for k, p in ours.items():
            if k in theirs and p.default is not inspect.Parameter.empty:
                assert theirs[k].default == p.default, (name, k)


@pytest.mark.parametrize("name,kw", [CASES[2], CASES[6], CASES[12], CASES[15], CASES[9]])
def test_state_dict_round_trip_continues_identically(name, kw):
    cls = getattr(optim, name)
    grads = _grad_seq()
    # uninterrupted run
    a = _Params()
    oa = cls(a, **kw)
    for gs in grads:
        for k, g in gs.items():
            a.grads[k][...] = g
        oa.step()
    # run 8 steps, save through JSON-able lists, rebuild both, continue
    b = _Params()
    ob = cls(b, **kw)
    for gs in grads[:8]:
        for k, g in gs.items():
            b.grads[k][...] = g
        ob.step()
    sd = ob.state_dict()
    text = json.dumps({"pg": sd["param_groups"],
                       "st": {k: {n: (v.tolist() if isinstance(v, np.ndarray) else v)
                                  for n, v in st.items()} for k, st in sd["state"].items()}})
    params = b.state_dict()
    c = _Params(seed=5)
    c.load_state_dict(params)
    oc = cls(c, **kw)
    back = json.loads(text)
    oc.load_state_dict({"param_groups": back["pg"], "state": back["st"]})
    for gs in grads[8:]:
        for k, g in gs.items():
            c.grads[k][...] = g
        oc.step()
    for k in SHAPES:
        np.testing.assert_array_equal(a.params[k], c.params[k])
    # the state_dict is a copy, not a view of live buffers
    sd2 = oc.state_dict()
    first = next(iter(sd2["state"].values()))
    for v in first.values():
        if isinstance(v, np.ndarray):
            v[...] = 123.0
    assert not any(np.any(v == 123.0) for st in oc.state.values()
                   for v in st.values() if isinstance(v, np.ndarray))


def test_load_state_dict_rejects_bad_shapes():
    m = _Params()
    o = optim.Adam(m)
    for k, g in _grad_seq()[0].items():
        m.grads[k][...] = g
    o.step()
    sd = o.state_dict()
    sd["state"]["bias"]["exp_avg"] = np.zeros(5)
    sd["state"]["nope"] = {"step": 1}
    before = o.state_dict()
    with pytest.raises(ValueError, match=r"bias.exp_avg.*\(4,\).*\(5,\)") as e:
        o.load_state_dict(sd)
    assert "nope" in str(e.value)
    np.testing.assert_array_equal(o.state["bias"]["exp_avg"], before["state"]["bias"]["exp_avg"])


def test_sources_modules_lists_and_pairs():
    torch = require_torch()
    # Sequential of Linears, a list of modules, and (params, grads) pairs give the same steps
    s1 = Sequential(a=Linear(3, 4, dtype=np.float64, seed=0), b=Linear(4, 2, dtype=np.float64, seed=1))
    s2 = [Linear(3, 4, dtype=np.float64, seed=0), Linear(4, 2, dtype=np.float64, seed=1)]
    s3 = [Linear(3, 4, dtype=np.float64, seed=0), Linear(4, 2, dtype=np.float64, seed=1)]
    o1 = optim.SGD(s1, lr=0.1, momentum=0.9)
    o2 = optim.SGD(s2, lr=0.1, momentum=0.9)
    o3 = optim.SGD([(m.params, m.grads) for m in s3], lr=0.1, momentum=0.9)
    assert sorted(o1.state_dict()["param_groups"][0]) == sorted(
        ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"])
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((5, 3))
        for mods, opt in ((list(s1), o1), (s2, o2), (s3, o3)):
            opt.zero_grad()
            h, b1 = mods[0].forward_train(x)
            y, b2 = mods[1].forward_train(h)
            b1(b2(y))  # gradient of 0.5*|y|^2
            opt.step()
    for k in ("weight", "bias"):
        np.testing.assert_array_equal(s1.a.params[k], s2[0].params[k])
        np.testing.assert_array_equal(s1.b.params[k], s3[1].params[k])
    assert set(o1.state) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    assert set(o2.state) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    with pytest.raises(TypeError):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError):
        optim.SGD(s1, lr=-1.0)
    with pytest.raises(ValueError):
        optim.SGD(s1, lr=0.1, nesterov=True)


def test_float32_params_stay_float32():
    m = Linear(3, 2, seed=0)
    o = optim.Adam(m, lr=0.1)
    m.grads["weight"][...] = 1.0
    w = m.params["weight"]
    o.step()
    assert m.params["weight"] is w and w.dtype == np.float32
    assert o.state["weight"]["exp_avg"].dtype == np.float32


# ---------------------------------------------------------------- schedules

def _lr_trace(opt, sched, metrics=None, n=30):
    out = []
    for i in range(n):
        out.append(opt.param_groups[0]["lr"])
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[i])
    return out


@pytest.mark.parametrize("kind,kw", [
    ("StepLR", dict(step_size=4, gamma=0.5)),
    ("StepLR", dict(step_size=1, gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=10)),
])
def test_schedules_match_torch(kind, kw):
    torch = require_torch()
    o = optim.SGD(_Params(), lr=0.1)
    to = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    s = getattr(optim, kind)(o, **kw)
    ts = getattr(torch.optim.lr_scheduler, kind)(to, **kw)
    ours = _lr_trace(o, s)
    theirs = []
    for _ in range(30):
        theirs.append(to.param_groups[0]["lr"])
        to.step()
        ts.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=1e-17)
    assert s.get_last_lr() == ts.get_last_lr()


@pytest.mark.parametrize("kw", [
    dict(),
    dict(mode="max", factor=0.5, patience=2, cooldown=2),
    dict(patience=1, threshold=0.1, threshold_mode="abs", min_lr=0.003),
    dict(mode="max", patience=0, threshold_mode="abs", threshold=0.0),
])
def test_reduce_on_plateau_matches_torch(kw):
    torch = require_torch()
    rng = np.random.default_rng(3)
    metrics = list(np.round(np.concatenate([np.linspace(1, 0.5, 8), 0.5 + 0.1 * rng.random(40)]), 3))
    o = optim.Adam(_Params(), lr=0.1)
    to = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=0.1)
    s = optim.ReduceLROnPlateau(o, **kw)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(to, **kw)
    ours = _lr_trace(o, s, metrics, n=48)
    theirs = []
    for m in metrics[:48]:
        theirs.append(to.param_groups[0]["lr"])
        ts.step(m)
    assert ours == theirs
    assert len(set(ours)) > 1 or kw.get("mode") == "max"


def test_schedule_state_dict_round_trip():
    for make in (lambda o: optim.CosineAnnealingLR(o, T_max=6, eta_min=0.01),
                 lambda o: optim.StepLR(o, 3, 0.5),
                 lambda o: optim.ReduceLROnPlateau(o, patience=1)):
        o1 = optim.SGD(_Params(), lr=0.2)
        s1 = make(o1)
        plateau = isinstance(s1, optim.ReduceLROnPlateau)
        metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 0.98, 0.97, 0.99, 1.0, 0.99, 1.0, 1.0]
        full = _lr_trace(o1, s1, metrics if plateau else None, n=12)
        o2 = optim.SGD(_Params(), lr=0.2)
        s2 = make(o2)
        part = _lr_trace(o2, s2, metrics if plateau else None, n=5)
        sd_s = json.loads(json.dumps(s2.state_dict()))
        sd_o = o2.state_dict()
        o3 = optim.SGD(_Params(), lr=0.2)
        s3 = make(o3)
        o3.load_state_dict(sd_o)
        s3.load_state_dict(sd_s)
        rest = _lr_trace(o3, s3, metrics[5:] if plateau else None, n=7)
        assert part + rest == full
