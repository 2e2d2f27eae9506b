"""Synthetic sequence tasks shared by the examples and the tests.

Every generator takes a batch size and a ``rng`` (seed or numpy Generator)
and returns time-major NumPy arrays, so a training loop is a few lines.

- :func:`adding_problem` (many-to-one regression, Hochreiter & Schmidhuber 1997);
- :func:`digit_reversal` (encoder-decoder, T_x != T_y);
- :func:`name_tagging` (many-to-many tagging on a small grammar);
- :func:`first_marker` (many-to-one classification).
"""
import numpy as np

from .sampling import as_generator

__all__ = ["adding_problem", "digit_reversal", "DIGIT_PAD", "DIGIT_BOS", "DIGIT_EOS",
           "DIGIT_VOCAB", "digits_to_str", "name_tagging", "TAG_VOCAB", "first_marker",
           "pad_batch"]


def pad_batch(seqs, pad=0):
    """List of 1-D int sequences -> (ids (T_max, B), lengths (B,))."""
    lengths = np.array([len(s) for s in seqs], np.int64)
    out = np.full((max(int(lengths.max(initial=0)), 0), len(seqs)), pad, np.int64)
    for b, s in enumerate(seqs):
        out[:len(s), b] = s
    return out, lengths


# ---------------------------------------------------------------- adding problem

def adding_problem(batch_size, T=50, rng=None, dtype=np.float32):
    """x (T, B, 2): channel 0 uniform in [0, 1], channel 1 marks two steps, one in
    each half; y (B, 1) is the sum of the two marked values. Guessing the mean
    (1.0) scores an MSE of about 1/6."""
    rng = as_generator(rng)
    x = np.zeros((T, batch_size, 2), dtype)
    x[:, :, 0] = rng.random((T, batch_size))
    half = max(T // 2, 1)
    i = rng.integers(0, half, batch_size)
    j = rng.integers(half, T, batch_size) if T > half else i
    b = np.arange(batch_size)
    x[i, b, 1] = 1
    x[j, b, 1] = 1
    y = (x[i, b, 0] + x[j, b, 0])[:, None].astype(dtype)
    return x, y


# ---------------------------------------------------------------- digit reversal

DIGIT_PAD, DIGIT_BOS, DIGIT_EOS = 0, 1, 2
DIGIT_VOCAB = 13  # pad, bos, eos, digits 0-9 as ids 3..12


def digit_reversal(batch_size, min_len=3, max_len=8, rng=None):
    """Random digit strings and their reversals.

    Returns a dict: ``src`` (T_x, B) ids with ``src_lengths``; ``tgt_in``
    (BOS + reversed digits) and ``tgt_out`` (reversed digits + EOS), both
    (T_y, B) with T_y = max length + 1, padded with DIGIT_PAD; ``tgt_mask``
    (T_y, B) marks the real steps.
    """
    rng = as_generator(rng)
    lens = rng.integers(min_len, max_len + 1, batch_size)
    seqs = [rng.integers(3, 13, n) for n in lens]
    src, src_lengths = pad_batch(seqs, DIGIT_PAD)
    tgt_in, _ = pad_batch([np.r_[DIGIT_BOS, s[::-1]] for s in seqs], DIGIT_PAD)
    tgt_out, tlen = pad_batch([np.r_[s[::-1], DIGIT_EOS] for s in seqs], DIGIT_PAD)
    mask = np.arange(tgt_out.shape[0])[:, None] < tlen[None, :]
    return {"src": src, "src_lengths": src_lengths, "tgt_in": tgt_in, "tgt_out": tgt_out,
            "tgt_mask": mask}


def digits_to_str(ids):
    """Digit ids (3..12) to a string, stopping at EOS or PAD."""
    out = []
    for i in ids:
        if i in (DIGIT_EOS, DIGIT_PAD):
            break
        out.append(str(int(i) - 3) if 3 <= i < 13 else "?")
    return "".join(out)


# ---------------------------------------------------------------- tagging grammar

# Words: 0 pad, 1 "said", 2-4 titles ("mr", "dr", "ms"), 5-14 ambiguous words
# (names or ordinary words), 15-39 plain words.
TAG_VOCAB = 40
_SAID, _TITLES, _AMBIG, _PLAIN = 1, (2, 5), (5, 15), (15, 40)


def _name_tags(sent):
    """1 for each ambiguous word in a maximal run of ambiguous words that follows a
    title or precedes "said"; 0 elsewhere. Needs context on both sides."""
    tags = np.zeros(len(sent), np.int64)
    t = 0
    while t < len(sent):
        if _AMBIG[0] <= sent[t] < _AMBIG[1]:
            e = t
            while e < len(sent) and _AMBIG[0] <= sent[e] < _AMBIG[1]:
                e += 1
            before = t > 0 and _TITLES[0] <= sent[t - 1] < _TITLES[1]
            after = e < len(sent) and sent[e] == _SAID
            if before or after:
                tags[t:e] = 1
            t = e
        else:
            t += 1
    return tags


def name_tagging(batch_size, min_len=6, max_len=20, rng=None):
    """Sentences from a small grammar, tagged 1 for tokens that belong to a name.

    A name is a run of 1-3 ambiguous words introduced by a title ("dr x y") or
    followed by "said" ("x y said"); the same words elsewhere are ordinary
    (tag 0), so a tagger must look both ways. Returns (ids (T, B),
    lengths (B,), tags (T, B)); padding has id 0 and tag 0.
    """
    rng = as_generator(rng)
    sents = []
    for _ in range(batch_size):
        n = int(rng.integers(min_len, max_len + 1))
        s = []
        while len(s) < n:
            r = rng.random()
            k = int(rng.integers(1, 4))
            amb = list(rng.integers(*_AMBIG, k))
            if r < 0.2:
                s += [int(rng.integers(*_TITLES))] + amb
            elif r < 0.4:
                s += amb + [_SAID]
            elif r < 0.6:
                s += amb[:1]  # an ordinary use of an ambiguous word
            elif r < 0.65:
                s += [_SAID]
            else:
                s += [int(rng.integers(*_PLAIN))]
        sents.append(np.array(s[:n], np.int64))
    ids, lengths = pad_batch(sents, 0)
    tags, _ = pad_batch([_name_tags(s) for s in sents], 0)
    return ids, lengths, tags


# ---------------------------------------------------------------- classification

def first_marker(batch_size, num_classes=4, vocab_size=20, min_len=5, max_len=30, rng=None):
    """Many-to-one: which marker token (ids 1..num_classes) appears first?

    Each sequence holds 1-3 markers among noise tokens (ids > num_classes),
    at random places; the label is (first marker id - 1). The answer is often
    far from the end, so the final state must remember it.
    Returns (ids (T, B), lengths (B,), labels (B,)).
    """
    rng = as_generator(rng)
    noise = (num_classes + 1, vocab_size)
    seqs, labels = [], np.empty(batch_size, np.int64)
    for b in range(batch_size):
        n = int(rng.integers(min_len, max_len + 1))
        s = rng.integers(*noise, n)
        k = int(rng.integers(1, 4))
        pos = np.sort(rng.choice(n, min(k, n), replace=False))
        s[pos] = rng.integers(1, num_classes + 1, pos.size)
        labels[b] = s[pos[0]] - 1
        seqs.append(s)
    ids, lengths = pad_batch(seqs, 0)
    return ids, lengths, labels
