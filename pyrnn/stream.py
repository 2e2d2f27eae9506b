"""Streaming, stateful inference for servers: one time step at a time.

    stream = pyrnn.stream.Stream(lstm, batch_size=1)
    for x_t in frames:
        y_t = stream.step(x_t)        # (B, H_out), or (H_out,) for 1-D input

A step of the whole stack is ONE compiled call: no Python and no allocation
per layer (the returned array is the stream's own output buffer, overwritten
by the next step: copy it to keep it). It releases the GIL when it has at
least 24,576 multiply-adds (batch x gates x hidden x (input + hidden), summed
over layers: e.g. a batch-1 GRU of 64 units, or an RNN of 111); a shorter
step keeps it, as NumPy does for small arrays, since handing the GIL to a
waiting thread and back costs more than the step. A step that released it
and finds another stepping thread holding it spins briefly for it rather
than sleeping (src/_core/handoff.h): 4 batch-1 LSTM H = 128 streams on 2
Python threads then run 1.7-1.9x the steps per second of one thread (1.05x
without the spin, 0.97x keeping the GIL), 4 RNN H = 128 streams 1.3-1.6x
(0.9-1.15x keeping it). Streams
step on a snapshot of the layer's weights; after ``load_state_dict`` (or any
``params_updated()``) each stream switches to the new weights at its next
step, so a step never sees half-updated weights. Many streams may share one
layer and run from many threads; one stream must not be stepped by two
threads at once (that raises RuntimeError).
"""
import os

import numpy as np

from . import _core, _threads, _workspace
from .layers import KINDS, _RNNBase, _check_int
from .nn import as_float_array

__all__ = ["Stream"]


# At batch 1 a layer whose packed weights are at least this big is stepped on
# two cores (src/_core/pair.h) when pyrnn has 2+ threads: each core then reads
# half the weights, from its own L2.
PAIR_MIN_BYTES = int(os.environ.get("PYRNN_PAIR_MIN_BYTES", 1 << 17))


def _pairs(mode, B, H, proj, Wcat):
    """Whether a layer's step may be shared with the helper core: batch 1, the
    packed pass (float32), whole 16-unit panels, and enough weights to pay.
    Not GRU reset_after=False: its second product needs all of r*h first."""
    return (B == 1 and not proj and Wcat is not None and H % 16 == 0 and mode != "GRU_RB"
            and Wcat.nbytes >= PAIR_MIN_BYTES)


class Stream:
    """Step a unidirectional (stacked) RNN/GRU/LSTM/MinimalGRU one time step at a time."""

    def __init__(self, layer, batch_size=1):
        if not isinstance(layer, _RNNBase):
            raise TypeError(f"layer: expected a pyrnn RNN, GRU, LSTM or MinimalGRU, got "
                            f"{type(layer).__name__}")
        if layer.bidirectional:
            raise ValueError("layer: a bidirectional layer cannot stream (its reverse direction "
                             "needs the whole sequence); use a unidirectional layer")
        self.layer = layer
        self.batch_size = B = _check_int("batch_size", batch_size, 1)
        dt = layer.dtype
        self.dtype = dt
        mode, G = layer.mode, KINDS[layer.mode][1]
        H, P = layer.hidden_size, layer.output_size
        self._lstm = mode == "LSTM"
        # every buffer a step writes starts on a cache line: with the helper
        # core, each core writes one half of a row
        line = _workspace.on_line
        self._h = line((layer.num_layers, B, P), dt, 0)
        self._c = line((layer.num_layers, B, H), dt, 0) if self._lstm else None
        version, weights = layer.stream_snapshot()
        specs = []
        for k in range(layer.num_layers):
            spec = dict(weights[k])
            spec.update(
                kind=KINDS[mode][0], I=layer.input_size if k == 0 else P, H=H, P=P,
                h=self._h[k], c=self._c[k] if self._lstm else None,
                gx=line((B, G * H), dt), gh=line((B, G * H), dt, 0),
                A=line((B, G * H), dt) if mode == "GRU_RB" else None,
                X2=line((B, H), dt) if mode == "GRU_RB" else None,
                M=line((B, H), dt) if layer.proj_size else None,
                hn=line((B, P), dt), cn=line((B, H), dt) if self._lstm else None,
                y=line((B, P), dt),
                zero=line((B, G * H), dt, 0),
                pair=_pairs(mode, B, H, layer.proj_size, spec["Wcat"]))
            specs.append(spec)
        self._core = _core.StreamCore(B, dt == np.float64, specs)
        self._paired = [d["pair"] for d in specs]   # per layer, for tests
        self._version = version

    def _refresh(self):
        # A refresh racing a step is harmless: the core keeps the old
        # snapshot alive until set_weights swaps the pointers, under the GIL.
        version, weights = self.layer.stream_snapshot()
        self._core.set_weights(weights)
        self._version = version

    def step(self, x):
        """Advance one time step. x: (B, I), or (I,) when batch_size == 1.
        Returns the top layer's output (B, H_out) / (H_out,), a buffer that the
        next step overwrites."""
        if self.layer._version != self._version:
            self._refresh()
        nt = _threads._num_threads
        y = self._core.step(x, nt)      # fast path: right dtype, shape, layout
        if y is not None:
            return y
        layer = self.layer
        x = as_float_array(x, self.dtype, "x")
        want = (self.batch_size, layer.input_size)
        if x.shape != want and not (x.ndim == 1 and self.batch_size == 1
                                    and x.shape[0] == layer.input_size):
            raise ValueError(f"x: expected shape {want}"
                             + (f" or ({layer.input_size},)" if self.batch_size == 1 else "")
                             + f", got {x.shape}")
        return self._core.step(np.ascontiguousarray(x), nt)

    def reset(self, rows=None):
        """Zero the state of every row, or of the given row indices."""
        if rows is None:
            self._h[...] = 0
            if self._lstm:
                self._c[...] = 0
            return
        idx = np.asarray(rows)
        if idx.dtype.kind not in "iub":
            raise TypeError(f"rows: expected integer indices or a bool mask, got {idx.dtype}")
        if idx.dtype.kind != "b" and idx.size and (idx.min() < -self.batch_size
                                                   or idx.max() >= self.batch_size):
            raise ValueError(f"rows: indices must be in [0, {self.batch_size}), got {rows}")
        self._h[:, idx] = 0
        if self._lstm:
            self._c[:, idx] = 0

    @property
    def state(self):
        """A copy of the state: h (num_layers, B, H_out), or (h, c) for LSTM."""
        if self._lstm:
            return self._h.copy(), self._c.copy()
        return self._h.copy()

    @state.setter
    def state(self, value):
        if self._lstm:
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError("state: LSTM streams take a tuple (h, c)")
            h, c = value
            c = as_float_array(c, self.dtype, "state[1] (c)")
            if c.shape != self._c.shape:
                raise ValueError(f"state[1] (c): expected shape {self._c.shape}, got {c.shape}")
        else:
            h = value
        h = as_float_array(h, self.dtype, "state" + ("[0] (h)" if self._lstm else ""))
        if h.shape != self._h.shape:
            raise ValueError(f"state: expected shape {self._h.shape}, got {h.shape}")
        self._h[...] = h
        if self._lstm:
            self._c[...] = c
