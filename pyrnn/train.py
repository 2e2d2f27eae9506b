"""Truncated backpropagation through time for token-stream language models.

A long id stream is cut into ``B`` parallel streams (:func:`batchify`, shape
``(N, B)``) and walked in windows. BPTT(k1, k2): every ``k1`` steps the model
runs forward over the last ``k2`` steps (``k2 - k1`` steps of context plus
the ``k1`` new ones) from the hidden state carried in from before them, held
constant; the loss of the ``k1`` new steps is backpropagated through all
``k2``. So each target is counted once per epoch, and with ``k2 >= N`` the
summed window gradients are exactly the full-BPTT gradient.

The trainer works with any model that has

- ``init_state(B)``, a state (an array or nested tuples/lists of arrays);
- ``forward(ids (T, B), state) -> (logits (T, B, V), state)``;
- ``forward_train(ids, state) -> (logits, state, backward)``, where
  ``backward(dlogits)`` adds parameter gradients into ``model.grads``;
- ``params``/``grads``/``zero_grad``/``state_dict``/``load_state_dict`` and,
  for exact resumption with dropout, ``rng_state``/``set_rng_state``.

Checkpoints (:meth:`Trainer.save_checkpoint`, written atomically through
:func:`pyrnn.io.save_arrays`) hold everything the run depends on: parameters,
optimizer and schedule state, the model's and the trainer's RNG states, the
data position, the carried hidden state, the step count and the metric
history; :meth:`Trainer.resume` followed by the same ``fit`` call continues
bit for bit as if the run had never stopped.
"""
import hashlib
import math
import signal
import threading
import time

import numpy as np

from .clip import clip_grad_norm, clip_grad_value
from .io import load_arrays, save_arrays
from .losses import cross_entropy, log_softmax
from .nn import as_index_array

__all__ = ["batchify", "Trainer", "CHECKPOINT_KIND"]

CHECKPOINT_KIND = "pyrnn.train.checkpoint"
_CKPT_VERSION = 1
_LN2 = math.log(2.0)


def batchify(ids, batch_size):
    """Cut a 1-D id stream into ``batch_size`` contiguous streams, ``(N, B)``.

    Stream ``b`` is ``ids[b*N:(b+1)*N]``; the ``len(ids) % B`` leftover ids are
    dropped. Column ``b`` of consecutive windows continues the same text, which
    is what lets the hidden state be carried across windows.
    """
    ids = as_index_array(ids, "ids")
    if ids.ndim != 1:
        raise ValueError(f"ids: expected shape (n,), got {tuple(ids.shape)}")
    B = int(batch_size)
    if B < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    N = ids.size // B
    if N < 2:
        raise ValueError(
            f"ids: {ids.size} tokens are too few for batch_size={B} "
            f"(each stream needs at least 2 tokens)")
    return np.ascontiguousarray(ids[:N * B].reshape(B, N).T)


def _bptt(bptt):
    if isinstance(bptt, (tuple, list)):
        if len(bptt) != 2:
            raise ValueError(f"bptt: expected k or (k1, k2), got {bptt!r}")
        k1, k2 = int(bptt[0]), int(bptt[1])
    else:
        k1 = k2 = int(bptt)
    if k1 < 1 or k2 < k1:
        raise ValueError(f"bptt: need 1 <= k1 <= k2, got k1={k1}, k2={k2}")
    return k1, k2


# -- hidden states of any nesting, flattened for checkpoints ------------------

def _flatten(state, out):
    """Append the arrays of ``state`` to ``out``; return a JSON structure spec."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return {"seq": "tuple" if isinstance(state, tuple) else "list",
                "items": [_flatten(s, out) for s in state]}
    out.append(np.asarray(state))
    return len(out) - 1


def _unflatten(spec, arrays):
    if spec is None:
        return None
    if isinstance(spec, dict):
        items = [_unflatten(s, arrays) for s in spec["items"]]
        return tuple(items) if spec["seq"] == "tuple" else items
    return arrays[spec]


def _copy_state(state):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(_copy_state(s) for s in state)
    return np.array(state, copy=True)


def _fingerprint(data):
    # a changed training set would make "resume exactly" silently false
    return hashlib.sha256(np.ascontiguousarray(data, dtype=np.int64).tobytes()).hexdigest()[:32]


class _Interrupts:
    """While active, Ctrl-C only sets a flag, so it lands between two steps and
    the checkpoint sees consistent parameters. A second Ctrl-C raises at once."""

    def __init__(self):
        self.hit = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handle)
            except ValueError:
                self._old = None
        return self

    def _handle(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class Trainer:
    """Truncated-BPTT trainer for stream language models.

    Parameters
    ----------
    model, optimizer : the model (see module doc) and a :mod:`pyrnn.optim` optimizer.
    bptt : ``k`` or ``(k1, k2)`` with ``1 <= k1 <= k2``.
    batch_size : number of parallel streams.
    clip_norm, clip_value : gradient clipping (global L2 norm / per element).
    scheduler : optional LR schedule, stepped once per training step.
    callbacks : callables ``cb(trainer, logs)``; ``logs["event"]`` is ``"step"``
        (after every step), ``"eval"`` (after a validation pass) or ``"end"``.
        Raising KeyboardInterrupt from a callback acts like Ctrl-C.
    progress : show a tqdm bar with loss, bits per token and tokens/s
        (``unit`` names the token, e.g. ``"char"``).
    checkpoint_path, checkpoint_every : save every N steps, at the end of
        ``fit`` and on Ctrl-C.
    on_interrupt : ``"raise"`` (save, then re-raise KeyboardInterrupt) or
        ``"return"`` (save, then return from ``fit``; ``trainer.interrupted`` is True).
    random_offset : start each epoch at a random offset in ``[0, k1)`` drawn
        from the trainer's generator, so window boundaries move between epochs.
    vocab : optional :class:`pyrnn.vocab.Vocab` stored in checkpoints.
    seed : seed of the trainer's generator. The model's own seed fixes its
        initialisation and dropout; the same seeds and thread count give the
        same numbers.
    """

    def __init__(self, model, optimizer, *, bptt=35, batch_size=32, clip_norm=None,
                 clip_value=None, scheduler=None, callbacks=(), progress=True, unit="tok",
                 checkpoint_path=None, checkpoint_every=None, on_interrupt="raise",
                 random_offset=False, vocab=None, seed=None):
        for attr in ("init_state", "forward", "forward_train", "state_dict",
                     "load_state_dict", "grads"):
            if not hasattr(model, attr):
                raise TypeError(f"model: {type(model).__name__} has no {attr!r}")
        self.model, self.optimizer = model, optimizer
        self.k1, self.k2 = _bptt(bptt)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if v is not None and not float(v) > 0:
                raise ValueError(f"{name} must be > 0 or None, got {v}")
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.scheduler = scheduler
        self.callbacks = list(callbacks or ())
        self.progress, self.unit = progress, unit
        if checkpoint_every is not None and int(checkpoint_every) < 1:
            raise ValueError(f"checkpoint_every must be >= 1 or None, got {checkpoint_every}")
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = None if checkpoint_every is None else int(checkpoint_every)
        if on_interrupt not in ("raise", "return"):
            raise ValueError(f"on_interrupt must be 'raise' or 'return', got {on_interrupt!r}")
        self.on_interrupt = on_interrupt
        self.random_offset = bool(random_offset)
        self.vocab = vocab
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.step = 0                # optimizer steps taken
        self.history = []            # per-step dicts: step, loss, grad_norm, lr
        self.eval_history = []       # per-evaluation dicts
        self.interrupted = False
        self._pos = None             # (epoch, position, offset) of the next window
        self._state = None           # carried hidden state at the next window
        self._snaps = []             # [(position, state)] for k2 > k1 context
        self._fingerprint = None

    # -- one window ------------------------------------------------------------
    def window_step(self, data, pos, state_at, n_ctx, n_new):
        """Forward and backward over ``data[pos-n_ctx : pos+n_new+1]``.

        The state at ``pos - n_ctx`` is ``state_at`` (held constant); the loss
        is the mean cross-entropy of the ``n_new`` new targets only. Gradients
        are ADDED into ``model.grads``. Returns ``(loss, n_correct, end_state)``.
        """
        s = pos - n_ctx
        x = data[s:pos + n_new]
        y = data[s + 1:pos + n_new + 1]
        logits, end_state, backward = self.model.forward_train(x, state_at)
        mask = None
        if n_ctx:
            mask = np.zeros(x.shape[0], dtype=np.float64)
            mask[n_ctx:] = 1.0
            mask = np.broadcast_to(mask[:, None], x.shape)
        loss, dlogits = cross_entropy(logits, y, mask=mask)
        backward(dlogits)
        new = logits[n_ctx:]
        correct = int(np.count_nonzero(new.argmax(axis=-1) == y[n_ctx:]))
        return float(loss), correct, end_state

    def _state_at(self, data, s):
        """The carried state at position ``s`` from the nearest earlier snapshot."""
        b, st = max(((p, st) for p, st in self._snaps if p <= s), key=lambda t: t[0])
        if s > b:
            _, st = self.model.forward(data[b:s], st)
        return st

    def _detach(self, state):
        fn = getattr(self.model, "detach_state", None)
        return _copy_state(fn(state) if fn is not None else state)

    def _new_epoch(self, epoch):
        off = int(self.rng.integers(0, self.k1)) if self.random_offset and self.k1 > 1 else 0
        self._pos = (epoch, off, off)
        self._state = self._detach(self.model.init_state(self.batch_size))
        self._snaps = [(off, self._state)]

    # -- training ----------------------------------------------------------------
    def steps_per_epoch(self, n_rows):
        return -(-(n_rows - 1) // self.k1)

    def fit(self, train_ids, steps=None, epochs=None, valid_ids=None, eval_every=None,
            eval_batch_size=None, max_time=None):
        """Train until ``steps`` optimizer steps in total (or ``epochs`` passes),
        or until ``max_time`` seconds have passed (then the bar counts seconds).

        ``steps`` counts from the start of the run, so after :meth:`resume`
        the same call finishes the same run. ``valid_ids`` is evaluated every
        ``eval_every`` steps and at the end. Returns a dict of the final
        training metrics (and ``valid`` when evaluated).
        """
        data = batchify(train_ids, self.batch_size)
        fp = _fingerprint(data)
        if self._fingerprint is not None and self._fingerprint != fp:
            raise ValueError("train_ids differ from the data of the resumed checkpoint "
                             "(resuming needs the same ids and batch_size)")
        self._fingerprint = fp
        per_epoch = self.steps_per_epoch(data.shape[0])
        if steps is None:
            steps = per_epoch * (1 if epochs is None else int(epochs))
        elif epochs is not None:
            raise ValueError("give steps or epochs, not both")
        steps = int(steps)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if self._pos is None:
            self._new_epoch(0)
        self.interrupted = False

        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            if max_time is None:
                bar = tqdm(total=steps, initial=min(self.step, steps), unit="step",
                           dynamic_ncols=True, leave=True)
            else:
                bar = tqdm(total=round(float(max_time)), unit="s", dynamic_ncols=True,
                           leave=True, bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s "
                                                  "[{elapsed}{postfix}]")
        tokens, t0, smooth = 0, time.perf_counter(), None
        valid = None
        try:
            with _Interrupts() as sig:
                while self.step < steps:
                    if max_time is not None and time.perf_counter() - t0 >= max_time:
                        break
                    rec = self._train_step(data)
                    tokens += rec["tokens"]
                    smooth = rec["loss"] if smooth is None else 0.98 * smooth + 0.02 * rec["loss"]
                    if bar is not None:
                        rate = tokens / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix({"loss": f"{smooth:.3f}",
                                         f"bp{self.unit[0]}": f"{smooth / _LN2:.3f}",
                                         f"{self.unit}/s": f"{rate:,.0f}"}, refresh=False)
                        if max_time is None:
                            bar.update(1)
                        else:
                            bar.update(min(time.perf_counter() - t0, bar.total) - bar.n)
                    logs = dict(rec, event="step",
                                tokens_per_s=tokens / max(time.perf_counter() - t0, 1e-9))
                    for cb in self.callbacks:
                        cb(self, logs)
                    if (valid_ids is not None and eval_every
                            and self.step % int(eval_every) == 0 and self.step < steps):
                        valid = self._eval_log(valid_ids, eval_batch_size)
                    if (self.checkpoint_path and self.checkpoint_every
                            and self.step % self.checkpoint_every == 0):
                        self.save_checkpoint(self.checkpoint_path)
                    if sig.hit:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            # every state change of a step happens after its last interruptible
            # point, so self.* always describes a step boundary here
            self.interrupted = True
            if self.checkpoint_path:
                self.save_checkpoint(self.checkpoint_path)
            if bar is not None:
                bar.close()
            if self.on_interrupt == "raise":
                raise
            return self._summary(tokens, t0, valid)
        if bar is not None:
            bar.close()
        if valid_ids is not None:
            valid = self._eval_log(valid_ids, eval_batch_size)
        if self.checkpoint_path:
            self.save_checkpoint(self.checkpoint_path)
        out = self._summary(tokens, t0, valid)
        for cb in self.callbacks:
            cb(self, dict(out, event="end"))
        return out

    def _summary(self, tokens, t0, valid):
        recent = self.history[-50:]
        loss = float(np.mean([r["loss"] for r in recent])) if recent else float("nan")
        out = {"step": self.step, "loss": loss, "bpc": loss / _LN2,
               "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9)}
        if valid is not None:
            out["valid"] = valid
        return out

    def _eval_log(self, ids, batch_size):
        res = self.evaluate(ids, batch_size=batch_size)
        rec = dict(res, step=self.step)
        self.eval_history.append(rec)
        for cb in self.callbacks:
            cb(self, dict(rec, event="eval"))
        return res

    def _train_step(self, data):
        epoch, pos, off = self._pos
        N = data.shape[0]
        if pos >= N - 1:  # epoch done: fresh state, as at the start
            self._new_epoch(epoch + 1)
            epoch, pos, off = self._pos
        n_new = min(self.k1, N - 1 - pos)
        n_ctx = min(self.k2 - self.k1, pos - off)
        state_at = self._state if n_ctx == 0 else self._state_at(data, pos - n_ctx)

        # Work on locals until the optimizer step; a KeyboardInterrupt raised
        # before it leaves the trainer, model and RNGs at the previous step.
        # The model's dropout generator advances in forward_train, so keep a copy.
        rng_before = self.model.rng_state() if hasattr(self.model, "rng_state") else None
        try:
            if hasattr(self.model, "zero_grad"):
                self.model.zero_grad()
            else:
                self.optimizer.zero_grad()
            loss, correct, end_state = self.window_step(data, pos, state_at, n_ctx, n_new)
            gnorm = None
            if self.clip_norm is not None:
                gnorm = clip_grad_norm(self.model, self.clip_norm)
            if self.clip_value is not None:
                clip_grad_value(self.model, self.clip_value)
        except KeyboardInterrupt:
            if rng_before is not None:
                self.model.set_rng_state(rng_before)
            raise
        lr = self.optimizer.lr
        # from here to the end nothing can be interrupted by Ctrl-C (deferred)
        # except a second Ctrl-C, which is documented as "stop now"
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        end_state = self._detach(end_state)
        new_pos = pos + n_new
        self._snaps.append((new_pos, end_state))
        keep_from = new_pos - (self.k2 - self.k1)
        # keep the latest snapshot at or before the earliest position still needed
        base = max(p for p, _ in self._snaps if p <= max(keep_from, off))
        self._snaps = [(p, s) for p, s in self._snaps if p >= base]
        self._state = end_state
        self._pos = (epoch, new_pos, off)
        self.step += 1
        rec = {"step": self.step, "epoch": epoch, "loss": loss, "bpc": loss / _LN2,
               "accuracy": correct / (n_new * data.shape[1]), "lr": lr,
               "grad_norm": gnorm, "tokens": n_new * data.shape[1]}
        self.history.append({k: rec[k] for k in ("step", "loss", "grad_norm", "lr")})
        return rec

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, ids, batch_size=None, window=None):
        """Loss over every next-token prediction of ``ids`` (no dropout, no gradients).

        The stream is batchified like training data (``batch_size`` defaults to
        the trainer's, reduced to fit short data) and read in windows of
        ``window`` steps (default ``max(k2, 64)``) with the state carried.
        Returns dict(loss, perplexity, bpc, accuracy, tokens); ``bpc`` is bits
        per token (per character for a character-level model).
        """
        ids = as_index_array(ids, "ids")
        if ids.ndim != 1:
            raise ValueError(f"ids: expected shape (n,), got {tuple(ids.shape)}")
        B = int(batch_size or self.batch_size)
        B = max(1, min(B, ids.size // 2))
        data = batchify(ids, B)
        W = int(window or max(self.k2, 64))
        state = self.model.init_state(B)
        total, correct, count = 0.0, 0, 0
        for s in range(0, data.shape[0] - 1, W):
            x = data[s:s + W]
            y = data[s + 1:s + W + 1]
            x = x[:y.shape[0]]
            logits, state = self.model.forward(x, state)
            logp = log_softmax(logits)
            total -= float(np.take_along_axis(logp, y[..., None], axis=-1).sum(dtype=np.float64))
            correct += int(np.count_nonzero(logits.argmax(axis=-1) == y))
            count += y.size
        loss = total / count
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "bpc": loss / _LN2,
                "accuracy": correct / count, "tokens": count}

    # -- checkpoints -------------------------------------------------------------------
    def save_checkpoint(self, path):
        """Write the full training state to ``path`` atomically."""
        arrays = {f"model/{k}": np.asarray(v) for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        opt_scalars = {}
        for key, st in opt["state"].items():
            for n, v in st.items():
                if isinstance(v, np.ndarray):
                    arrays[f"optim/{key}/{n}"] = v
                else:
                    opt_scalars.setdefault(key, {})[n] = v
        flat = []
        state_spec = _flatten(self._state, flat)
        for i, a in enumerate(flat):
            arrays[f"state/{i}"] = a
        snaps = []
        for j, (p, st) in enumerate(self._snaps):
            sflat = []
            spec = _flatten(st, sflat)
            for i, a in enumerate(sflat):
                arrays[f"snap/{j}/{i}"] = a
            snaps.append({"pos": p, "spec": spec, "n": len(sflat)})
        meta = {
            "kind": CHECKPOINT_KIND, "version": _CKPT_VERSION,
            "step": self.step, "pos": list(self._pos) if self._pos else None,
            "bptt": [self.k1, self.k2], "batch_size": self.batch_size,
            "fingerprint": self._fingerprint,
            "state_spec": state_spec, "snaps": snaps,
            "optimizer": {"class": type(self.optimizer).__name__,
                          "param_groups": opt["param_groups"], "scalars": opt_scalars},
            "scheduler": (self.scheduler.state_dict()
                          if self.scheduler is not None and hasattr(self.scheduler, "state_dict")
                          else None),
            "model_rng": self.model.rng_state() if hasattr(self.model, "rng_state") else {},
            "trainer_rng": self.rng.bit_generator.state,
            "history": self.history, "eval_history": self.eval_history,
        }
        metadata = {"checkpoint": meta}
        if hasattr(self.model, "config"):
            metadata["model_config"] = self.model.config()
        if self.vocab is not None:
            metadata["vocab"] = self.vocab.to_dict() if hasattr(self.vocab, "to_dict") else self.vocab
        save_arrays(path, arrays, metadata)

    def resume(self, path):
        """Restore everything :meth:`save_checkpoint` wrote; then call ``fit``
        with the same data and ``steps`` to finish the run exactly."""
        arrays, metadata = load_arrays(path)
        meta = metadata.get("checkpoint")
        if not isinstance(meta, dict) or meta.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{path}: not a pyrnn training checkpoint")
        if meta.get("version") != _CKPT_VERSION:
            raise ValueError(f"{path}: unsupported checkpoint version {meta.get('version')!r}")
        if tuple(meta["bptt"]) != (self.k1, self.k2) or meta["batch_size"] != self.batch_size:
            raise ValueError(
                f"{path}: checkpoint was made with bptt={tuple(meta['bptt'])}, "
                f"batch_size={meta['batch_size']}; this trainer has "
                f"bptt={(self.k1, self.k2)}, batch_size={self.batch_size}")
        self.model.load_state_dict(
            {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        ostate = {}
        for key, sc in meta["optimizer"]["scalars"].items():
            ostate.setdefault(key, {}).update(sc)
        for k, v in arrays.items():
            if k.startswith("optim/"):
                key, n = k[len("optim/"):].rsplit("/", 1)
                ostate.setdefault(key, {})[n] = v
        groups = meta["optimizer"]["param_groups"]
        for g in groups:  # JSON made tuples into lists
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
        self.optimizer.load_state_dict({"param_groups": groups, "state": ostate})
        if meta.get("scheduler") is not None and self.scheduler is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        if meta.get("model_rng") and hasattr(self.model, "set_rng_state"):
            self.model.set_rng_state(meta["model_rng"])
        self.rng.bit_generator.state = meta["trainer_rng"]
        self._state = _unflatten(meta["state_spec"],
                                 [arrays[f"state/{i}"] for i in range(_count(arrays, "state/"))])
        self._snaps = [(s["pos"], _unflatten(s["spec"], [arrays[f"snap/{j}/{i}"]
                                                          for i in range(s["n"])]))
                       for j, s in enumerate(meta["snaps"])]
        self._pos = tuple(meta["pos"]) if meta["pos"] is not None else None
        self.step = int(meta["step"])
        self.history = list(meta["history"])
        self.eval_history = list(meta["eval_history"])
        self._fingerprint = meta["fingerprint"]
        if self.vocab is None and "vocab" in metadata:
            self.vocab = metadata["vocab"]
        return metadata


def _count(arrays, prefix):
    return sum(1 for k in arrays if k.startswith(prefix))
