"""The speed targets of issues 3 and 6, checked against a ``pyrnn bench`` report,
each with this machine's floor: the least time any implementation could take.

    floor = max(FLOPs / sgemm peak, bytes of weights read / read rate)

both measured in the same run. The steps of a sequence run one after another and
each reads all of W_hh (a stream step: W_ih and W_hh), so a call reads it T times,
and training reads it again in the backward pass; ``read_rate`` is how fast the
cores stream a buffer of that size from the cache that holds it (with 2 threads each
core reads its half from its own). A target's time is the peer's time over the
wanted ratio; where that is below the floor, nothing can meet the target here.

A second, tighter bound assumes what a single time loop does: the products over
the whole sequence (input projection, and in training dX and the weight
gradients) at the peak, and only then the steps, each at the slower of its FLOPs
at the peak and its W_hh read:

    no_overlap = other FLOPs / peak + max(step FLOPs / peak, W_hh reads / read rate)

Beating it takes overlapping the compute-bound products with the memory-bound
steps on the same cores.
"""
import math
import threading

import numpy as np

# (issue, what): the ratio wanted. Inference is against the fastest peer, training
# against torch (the only peer that trains).
INFER_B1_SMALL, INFER_B1_LARGE = 2.0, 1.1   # batch 1, H <= 128 / larger (L3-bound)
INFER_B16 = 1.5                              # batch 2-16
INFER_BIG, INFER_BIG_PCT = 1.0, 90.0         # batch 32+; % of peak at batch 64+
TRAIN_SMALL, TRAIN_SMALL_GRU_RNN = 2.0, 5.0  # batch <= 16 (GRU and RNN: 5x)
TRAIN_BIG, TRAIN_BIG_PCT = 1.1, 85.0         # batch 32+; % of peak at batch 64+
THREADS_MIN_B, THREADS_X = 64, 1.8           # 2 threads over 1, batch 64 and up
STREAM_TORCH, STREAM_ORT, STREAM_THROUGHPUT = 5.0, 2.0, 1.7

_GATES = {"lstm": 4, "gru": 3, "gru_rb": 3, "mgru": 2, "rnn": 1}


def read_rate(nbytes, threads, min_time=0.01, repeats=3):
    """GB/s at which `threads` cores together stream-read nbytes, each its own
    1/threads share (as pyrnn's batch-1 steps split the weights between the
    cores), from whichever cache holds it: the sum of the cores' best rates
    over `repeats` reads of about min_time seconds each, run at once."""
    from . import _core
    if nbytes <= 0 or threads < 1:
        raise ValueError(f"read_rate: nbytes and threads must be positive, got {nbytes}, {threads}")
    share = 32 * max(1, math.ceil(nbytes / (4 * threads * 32)))    # floats, whole AVX2 blocks
    reps = max(1, int(min_time * 50e9 / (4 * share)))               # assume >= 50 GB/s
    bufs = [np.ones(share, np.float32) for _ in range(threads)]
    best = [math.inf] * threads

    def run(i):
        _core._read_seconds(bufs[i], 1)       # into the cache
        for _ in range(repeats):
            best[i] = min(best[i], _core._read_seconds(bufs[i], reps))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(4 * share * reps / s for s in best) / 1e9


def weight_bytes(cell, I, H, stream=False):
    """float32 bytes one step reads: W_hh, and W_ih too for a stream step
    (which has no input projection over the whole sequence)."""
    return 4 * _GATES[cell] * H * (H + (I if stream else 0))


class Rates:
    """read_rate, measured once per (bytes, threads); ``table`` for the report."""

    def __init__(self, measure=read_rate):
        self._measure, self.table = measure, []

    def __call__(self, nbytes, threads):
        for r in self.table:
            if r["bytes"] == nbytes and r["threads"] == threads:
                return r["gbps"]
        gbps = float(self._measure(nbytes, threads))
        self.table.append({"bytes": nbytes, "threads": threads, "gbps": gbps})
        return gbps


def _grid_seconds(entry, peak_gflops, rate):
    """(all FLOPs, the steps' FLOPs, the steps' W_hh reads) of one grid entry, in
    seconds: at the peak, at the peak, at the read rate."""
    reads = entry["T"] * (2 if entry["mode"] == "train" else 1)
    G, B, H = _GATES[entry["cell"]], entry["B"], entry["H"]
    w = weight_bytes(entry["cell"], entry["I"], H)
    step_flop = reads * 2 * B * H * G * H       # h @ W_hh^T (and dgates @ W_hh)
    return (entry["flop"] / (peak_gflops * 1e9), step_flop / (peak_gflops * 1e9),
            reads * w / (rate(w, entry["threads"]) * 1e9))


def grid_floor_ms(entry, peak_gflops, rate):
    """The floor of one grid entry (see the module's docstring), in ms."""
    compute, _, memory = _grid_seconds(entry, peak_gflops, rate)
    return 1e3 * max(compute, memory)


def grid_no_overlap_ms(entry, peak_gflops, rate):
    """The no-overlap bound of one grid entry (see the module's docstring), in ms."""
    compute, steps, memory = _grid_seconds(entry, peak_gflops, rate)
    return 1e3 * (compute - steps + max(steps, memory))


def stream_floor_us(entry, peak_gflops, rate):
    """The floor of one batch-1 stream step, in µs."""
    I, H = entry["input"], entry["hidden"]
    w = weight_bytes(entry["cell"], I, H, stream=True)
    flop = 2 * (I + H) * _GATES[entry["cell"]] * H
    return 1e6 * max(flop / (peak_gflops * 1e9), w / (rate(w, entry["threads"]) * 1e9))


def _target(issue, where, want, got, need, floor, unit, what, no_overlap=None):
    met = got is not None and got >= want
    no_overlap = floor if no_overlap is None else no_overlap
    return {"issue": issue, "where": where, "what": what, "want": want, "got": got,
            "met": met, "need": need, "floor": floor, "no_overlap": no_overlap, "unit": unit,
            "reachable": None if need is None or floor is None else need >= floor,
            "overlap_needed": None if need is None or floor is None
            else floor <= need < no_overlap}


def grid_targets(results, peaks, rate):
    """Issue 3's targets for every grid entry pyrnn ran in; adds ``floor_ms`` to
    each such entry. Returns a list of target dicts."""
    out, by_key = [], {}
    for e in results:
        me = e["peers"].get("pyrnn")
        if me is None:
            continue
        peak = peaks[str(e["threads"])]["gflops"]
        floor = e["floor_ms"] = grid_floor_ms(e, peak, rate)
        no_overlap = e["no_overlap_ms"] = grid_no_overlap_ms(e, peak, rate)
        by_key[(e["cell"], tuple(e["shape"]), e["mode"], e["threads"])] = e
        B, H, cell = e["B"], e["H"], e["cell"]
        where = (f"{cell} {':'.join(map(str, e['shape']))} {e['mode']} t{e['threads']}")
        if e["mode"] == "infer":
            want = (INFER_B1_SMALL if H <= 128 else INFER_B1_LARGE) if B == 1 else \
                INFER_B16 if B <= 16 else INFER_BIG
            peer = e.get("best_peer")
        else:
            want = (TRAIN_SMALL_GRU_RNN if cell in ("gru", "gru_rb", "mgru", "rnn")
                    else TRAIN_SMALL) if B <= 16 else TRAIN_BIG
            peer = "torch" if "torch" in e["peers"] else None
        if peer is not None:
            need = e["peers"][peer]["median_ms"] / want
            out.append(_target(3, where, want, e["ratio"][peer], need, floor, "ms",
                               f">= {want:g}x {peer}", no_overlap))
        if B >= THREADS_MIN_B:
            pct = INFER_BIG_PCT if e["mode"] == "infer" else TRAIN_BIG_PCT
            need = e["flop"] / (pct / 100 * peak * 1e9) * 1e3
            out.append(_target(3, where, pct, me["pct_peak"], need, floor, "ms",
                               f">= {pct:g}% of peak", no_overlap))
    for (cell, shape, mode, threads), e2 in by_key.items():
        e1 = by_key.get((cell, shape, mode, 1))
        if threads != 2 or e1 is None or shape[1] < THREADS_MIN_B:
            continue
        t1, t2 = e1["peers"]["pyrnn"]["median_ms"], e2["peers"]["pyrnn"]["median_ms"]
        out.append(_target(3, f"{cell} {':'.join(map(str, shape))} {mode} t2", THREADS_X,
                           t1 / t2, t1 / THREADS_X, e2["floor_ms"], "ms",
                           f">= {THREADS_X:g}x 1 thread", e2["no_overlap_ms"]))
    return out


def stream_targets(entries, throughput, peaks, rate):
    """Issue 6's targets: per-step latency against torch and ONNX Runtime (adds
    ``floor_us`` to each entry), and 2 Python threads over 1."""
    out = []
    for e in entries:
        if "pyrnn" not in e["peers"]:
            continue
        floor = e["floor_us"] = stream_floor_us(e, peaks[str(e["threads"])]["gflops"], rate)
        where = f"stream {e['cell']} H={e['hidden']} t{e['threads']}"
        for peer, want in (("torch", STREAM_TORCH), ("onnxruntime", STREAM_ORT)):
            if peer in e["peers"]:
                need = e["peers"][peer]["median_us"] / want
                out.append(_target(6, where, want, e["ratio"][peer], need, floor, "us",
                                   f">= {want:g}x {peer}"))
    for t in throughput:
        out.append(_target(6, f"throughput {t['cell']} H={t['hidden']} x{t['streams']} streams",
                           STREAM_THROUGHPUT, t["ratio"], None, None, None,
                           f">= {STREAM_THROUGHPUT:g}x steps/s, 2 Python threads over 1"))
    return out


def _got(t):
    if t["got"] is None:
        return "-"
    return f"{t['got']:.0f}%" if t["what"].endswith("of peak") else f"{t['got']:.2f}x"


def _verdict(t):
    if t["met"]:
        return "met"
    if t["reachable"] is False:
        return f"missed; below the floor ({t['floor'] / t['need']:.2f}x)"
    if t.get("overlap_needed"):
        return f"missed; below no-overlap ({t['no_overlap'] / t['need']:.2f}x)"
    return "missed"


def format_targets(targets):
    """The targets as a table, then a count of those met and of those out of reach."""
    from .bench import _f, _table
    rows = []
    for t in targets:
        spec = ".3f" if t["unit"] == "ms" else ".2f"
        rows.append([t["where"], t["what"], _got(t), _f(t["need"], spec), _f(t["floor"], spec),
                     _f(t.get("no_overlap"), spec), _verdict(t)])
    missed = [t for t in targets if not t["met"]]
    out = sum(1 for t in missed if t["reachable"] is False)
    overlap = sum(1 for t in missed if t.get("overlap_needed"))
    return (_table(rows, ["where", "target", "got", "need", "floor", "no-overlap", "verdict"])
            + f"\n\ntargets met: {len(targets) - len(missed)} of {len(targets)}; of the "
              f"{len(missed)} missed, {out} ask for less time than the floor and {overlap} more "
              "for less than the no-overlap bound. need: the time (ms a call, us a step) that "
              "meets the target; floor: max(FLOPs at the peak, weights read at the measured "
              "read rate); no-overlap: the whole-sequence products at the peak, then the "
              "steps; see pyrnn.targets.")


def compare(runs):
    """The targets of several runs (lists of target dicts, as saved under
    "targets" by ``pyrnn bench --json``) side by side, matched by where and
    what, in first-seen order: one row per target, each with ``targets`` (the
    run's target dict, or None where that run did not check it)."""
    rows, index = [], {}
    for k, run in enumerate(runs):
        for t in run:
            key = (t["where"], t["what"])
            if key not in index:
                index[key] = len(rows)
                rows.append({"where": t["where"], "what": t["what"],
                             "targets": [None] * len(runs)})
            rows[index[key]]["targets"][k] = t
    return rows


def format_compare(names, rows):
    """The targets not met in every run that checked them (one ratio column per
    run, then the last such run's verdict), and counts over all of them: the
    noisy machine's way of quoting two runs."""
    from .bench import _table
    table, every, some, none, floor, overlap = [], 0, 0, 0, 0, 0
    for r in rows:
        ts = r["targets"]
        checked = [t for t in ts if t is not None]
        met = sum(t["met"] for t in checked)
        if met == len(checked):
            every += 1
            continue
        some += met > 0
        last = checked[-1]
        if met == 0:
            none += 1
            floor += last["reachable"] is False
            overlap += bool(last.get("overlap_needed"))
        table.append([r["where"], r["what"]] + ["-" if t is None else _got(t) for t in ts]
                     + [f"{met} of {len(checked)}", _verdict(last)])
    head = ["where", "target"] + list(names) + ["met in", "last verdict"]
    return ((_table(table, head) + "\n\n" if table else "")
            + f"{len(rows)} targets in {len(names)} runs: met in every run {every}, in some "
              f"but not all {some}, in none {none} (in the last run that checked them, {floor} "
              f"of those ask for less time than the floor and {overlap} more for less than the "
              "no-overlap bound).")
