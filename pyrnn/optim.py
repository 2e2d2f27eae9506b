"""Optimizers and learning-rate schedules with torch.optim's exact update rules.

An optimizer takes a module, a list of modules, or a list of
``(params_dict, grads_dict)`` pairs. Parameters are updated in place; after
each step every module's ``params_updated()`` is called (compiled layers may
cache packed weights). Gradients are looked up afresh at every step, so a
module may rebind its grad arrays between steps.

There is one parameter group, ``opt.param_groups[0]``, holding the
hyperparameters (``opt.lr`` is a shortcut for its ``"lr"``). State is keyed
by parameter name (``"3.weight"`` = parameter ``weight`` of the 4th source
when several were given) so ``state_dict()`` survives a rebuild of the model.
"""
import math
from collections.abc import Mapping

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
           "LRScheduler", "StepLR", "CosineAnnealingLR", "ReduceLROnPlateau"]


def _lerp_(a, b, w):
    """a <- lerp(a, b, w) with torch's two-sided formula (same rounding)."""
    if w < 0.5:
        a += w * (b - a)
    else:
        a[...] = b - (b - a) * (1.0 - w)


def _check_nonneg(name, v):
    if not v >= 0.0:
        raise ValueError(f"Invalid {name} value: {v}")


class Optimizer:
    """Base class: parameter collection, state handling, zero_grad."""

    defaults = {}

    def __init__(self, modules_or_params, **hyper):
        self._sources = self._normalise(modules_or_params)
        self.param_groups = [dict(hyper)]
        self.state = {}  # key -> dict of step counters and buffers
        keys = [k for k, _, _ in self._items()]
        if not keys:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")

    # -- sources -----------------------------------------------------------
    @staticmethod
    def _normalise(src):
        def one(s):
            if isinstance(s, tuple) and len(s) == 2 and all(isinstance(d, Mapping) for d in s):
                return ("pair", s)
            if isinstance(getattr(s, "params", None), Mapping) and \
                    isinstance(getattr(s, "grads", None), Mapping):
                return ("module", s)
            raise TypeError(
                "expected a module (with params and grads dicts), a list of modules, "
                f"or a list of (params, grads) pairs; got {type(s).__name__}")

        if isinstance(src, (list, tuple)) and not (
                isinstance(src, tuple) and len(src) == 2
                and all(isinstance(d, Mapping) for d in src)):
            return [one(s) for s in src]
        return [one(src)]

    def _items(self):
        """(key, param, grad) for every parameter, grads fetched afresh."""
        out, multi = [], len(self._sources) > 1
        for i, (kind, s) in enumerate(self._sources):
            params, grads = (s.params, s.grads) if kind == "module" else s
            for name, p in params.items():
                key = f"{i}.{name}" if multi else name
                g = grads.get(name)
                if g is None:
                    raise ValueError(f"{type(self).__name__}: no gradient for {key!r}")
                if not isinstance(p, np.ndarray) or p.shape != np.shape(g):
                    raise ValueError(
                        f"{type(self).__name__}: grad {key!r} expected shape "
                        f"{np.shape(p)}, got {np.shape(g)}")
                out.append((key, p, np.asarray(g)))
        return out

    def _notify(self):
        for kind, s in self._sources:
            fn = getattr(s, "params_updated", None) if kind == "module" else None
            if fn is not None:
                fn()

    # -- public API ----------------------------------------------------------
    @property
    def lr(self):
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        self.param_groups[0]["lr"] = value

    def zero_grad(self):
        """Set every gradient to zero, in place."""
        for _, _, g in self._items():
            g[...] = 0

    def step(self):
        """Apply one update to every parameter, then notify the modules."""
        group = self.param_groups[0]
        for key, p, g in self._items():
            st = self.state.get(key)
            if st is None:
                st = self.state[key] = self._init_state(p, group)
            g = g.astype(p.dtype, copy=False)
            if group.get("maximize", False):
                g = -g
            self._update(p, g, st, group)
        self._notify()

    def state_dict(self):
        """Plain dict of copies: hyperparameters and per-parameter state."""
        return {
            "param_groups": [dict(g) for g in self.param_groups],
            "state": {k: {n: (v.copy() if isinstance(v, np.ndarray) else v)
                          for n, v in st.items()} for k, st in self.state.items()},
        }

    def load_state_dict(self, state_dict):
        """Restore from ``state_dict()``; checks keys and shapes first."""
        try:
            groups = state_dict["param_groups"]
            state = state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError("optimizer state_dict needs 'param_groups' and 'state'") from None
        if len(groups) != 1:
            raise ValueError(f"expected 1 param group, got {len(groups)}")
        params = {k: p for k, p, _ in self._items()}
        problems = []
        unexpected = [k for k in state if k not in params]
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        new_state = {}
        for k, st in state.items():
            if k not in params:
                continue
            new = {}
            for n, v in st.items():
                if n == "step":
                    new[n] = int(v)
                    continue
                a = np.asarray(v)
                if a.shape != params[k].shape:
                    problems.append(f"{k}.{n}: expected shape {params[k].shape}, got {a.shape}")
                new[n] = np.array(a, dtype=params[k].dtype, copy=True)
            new_state[k] = new
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))
        self.param_groups = [dict(groups[0])]
        self.state = new_state

    # -- subclass hooks ------------------------------------------------------
    def _init_state(self, p, group):
        return {}

    def _update(self, p, g, st, group):
        raise NotImplementedError

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self.param_groups[0].items())
        return f"{type(self).__name__}({hp})"


class SGD(Optimizer):
    """torch.optim.SGD: L2 weight decay, momentum with dampening, Nesterov."""

    def __init__(self, modules_or_params, lr=1e-3, momentum=0.0, dampening=0.0,
                 weight_decay=0.0, nesterov=False, maximize=False):
        for n, v in (("learning rate", lr), ("momentum", momentum),
                     ("weight_decay", weight_decay)):
            _check_nonneg(n, v)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(modules_or_params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)

    def _update(self, p, g, st, group):
        wd, mom = group["weight_decay"], group["momentum"]
        if wd != 0:
            g = g + wd * p
        if mom != 0:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = np.array(g, copy=True)
            else:
                buf *= mom
                buf += (1 - group["dampening"]) * g
            g = g + mom * buf if group["nesterov"] else buf
        p -= group["lr"] * g


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay added to the gradient; amsgrad)."""

    _decoupled = False

    def __init__(self, modules_or_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, amsgrad=False, maximize=False):
        _check_nonneg("learning rate", lr)
        _check_nonneg("epsilon", eps)
        _check_nonneg("weight_decay", weight_decay)
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {b}")
        super().__init__(modules_or_params, lr=lr, betas=tuple(betas), eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)

    def _init_state(self, p, group):
        st = {"step": 0, "exp_avg": np.zeros_like(p), "exp_avg_sq": np.zeros_like(p)}
        if group["amsgrad"]:
            st["max_exp_avg_sq"] = np.zeros_like(p)
        return st

    def _update(self, p, g, st, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        st["step"] += 1
        step = st["step"]
        if wd != 0:
            if self._decoupled:
                p *= 1 - lr * wd
            else:
                g = g + wd * p
        m, v = st["exp_avg"], st["exp_avg_sq"]
        _lerp_(m, g, 1 - b1)
        v *= b2
        v += (1 - b2) * (g * g)
        bc1 = 1 - b1 ** step
        bc2_sqrt = (1 - b2 ** step) ** 0.5
        if group["amsgrad"]:
            vmax = st.get("max_exp_avg_sq")
            if vmax is None:  # amsgrad switched on after a load
                vmax = st["max_exp_avg_sq"] = np.zeros_like(p)
            np.maximum(vmax, v, out=vmax)
            v = vmax
        denom = np.sqrt(v) / bc2_sqrt + eps
        p -= (lr / bc1) * (m / denom)


class AdamW(Adam):
    """torch.optim.AdamW: weight decay applied to the parameter, not the gradient."""

    _decoupled = True

    def __init__(self, modules_or_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=1e-2, amsgrad=False, maximize=False):
        super().__init__(modules_or_params, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)


class RMSprop(Optimizer):
    """torch.optim.RMSprop (optionally centered, with momentum)."""

    def __init__(self, modules_or_params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, maximize=False):
        for n, v in (("learning rate", lr), ("epsilon", eps), ("momentum", momentum),
                     ("weight_decay", weight_decay), ("alpha", alpha)):
            _check_nonneg(n, v)
        super().__init__(modules_or_params, lr=lr, alpha=alpha, eps=eps,
                         weight_decay=weight_decay, momentum=momentum, centered=centered,
                         maximize=maximize)

    def _init_state(self, p, group):
        st = {"step": 0, "square_avg": np.zeros_like(p)}
        if group["momentum"] > 0:
            st["momentum_buffer"] = np.zeros_like(p)
        if group["centered"]:
            st["grad_avg"] = np.zeros_like(p)
        return st

    def _update(self, p, g, st, group):
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        st["step"] += 1
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        sq = st["square_avg"]
        sq *= alpha
        sq += (1 - alpha) * (g * g)
        if group["centered"]:
            ga = st.setdefault("grad_avg", np.zeros_like(p))
            _lerp_(ga, g, 1 - alpha)
            avg = np.sqrt(sq - ga * ga)
        else:
            avg = np.sqrt(sq)
        avg += eps
        if group["momentum"] > 0:
            buf = st.setdefault("momentum_buffer", np.zeros_like(p))
            buf *= group["momentum"]
            buf += g / avg
            p -= lr * buf
        else:
            p -= lr * (g / avg)


class Adagrad(Optimizer):
    """torch.optim.Adagrad with lr decay and an initial accumulator value."""

    def __init__(self, modules_or_params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, maximize=False):
        for n, v in (("learning rate", lr), ("lr_decay", lr_decay),
                     ("weight_decay", weight_decay),
                     ("initial_accumulator_value", initial_accumulator_value),
                     ("epsilon", eps)):
            _check_nonneg(n, v)
        super().__init__(modules_or_params, lr=lr, lr_decay=lr_decay,
                         weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         maximize=maximize)
        # torch creates the accumulator at construction, not at the first step
        for key, p, _ in self._items():
            self.state[key] = self._init_state(p, self.param_groups[0])

    def _init_state(self, p, group):
        return {"step": 0, "sum": np.full_like(p, group["initial_accumulator_value"])}

    def _update(self, p, g, st, group):
        st["step"] += 1
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        clr = group["lr"] / (1 + (st["step"] - 1) * group["lr_decay"])
        s = st["sum"]
        s += g * g
        p -= clr * (g / (np.sqrt(s) + group["eps"]))


# ---------------------------------------------------------------- schedules

class LRScheduler:
    """Base of the epoch-style schedules; ``step()`` once per epoch (or step).

    Follows torch's chainable updates (each lr computed from the current
    one), so the learning rates match torch's to the last bit.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a pyrnn optimizer")
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = -1
        self._step_count = 0
        self.step()

    def get_last_lr(self):
        return list(self._last_lr)

    def step(self):
        self._step_count += 1
        self.last_epoch += 1
        lrs = self.get_lr() if self.last_epoch > 0 else \
            [g["lr"] for g in self.optimizer.param_groups]
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_lr(self):
        raise NotImplementedError

    def state_dict(self):
        """Everything but the optimizer, as plain Python values."""
        return {k: (list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update({k: (list(v) if isinstance(v, list) else v)
                              for k, v in state_dict.items()})


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if int(step_size) < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size}")
        self.step_size, self.gamma = int(step_size), gamma
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch % self.step_size != 0:
            return [g["lr"] for g in self.optimizer.param_groups]
        return [g["lr"] * self.gamma for g in self.optimizer.param_groups]


class CosineAnnealingLR(LRScheduler):
    """Cosine from the base lr down to ``eta_min`` over ``T_max`` epochs (and
    back up after, as torch's recursive form does)."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        if int(T_max) < 1:
            raise ValueError(f"T_max must be a positive integer, got {T_max}")
        self.T_max, self.eta_min = int(T_max), eta_min
        super().__init__(optimizer)

    def get_lr(self):
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if (e - 1 - T) % (2 * T) == 0:
            # the recursive ratio below would divide by zero here
            return [g["lr"] + (b - lo) * (1 - math.cos(math.pi / T)) / 2
                    for b, g in zip(self.base_lrs, groups)]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T))
                * (g["lr"] - lo) + lo for g in groups]


class ReduceLROnPlateau:
    """Cut the lr by ``factor`` when a metric stops improving for ``patience``
    epochs (torch.optim.lr_scheduler.ReduceLROnPlateau)."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a pyrnn optimizer")
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r} is unknown")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode!r} is unknown")
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.eps = cooldown, eps
        n = len(optimizer.param_groups)
        self.min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * n
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.cooldown_counter = 0
        self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def _is_better(self, a, best):
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel"
                        else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel"
                    else best + self.threshold)

    def step(self, metrics):
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            for g, lo in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(g["lr"])
                new = max(old * self.factor, lo)
                if old - new > self.eps:
                    g["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self):
        return list(self._last_lr)

    state_dict = LRScheduler.state_dict
    load_state_dict = LRScheduler.load_state_dict
