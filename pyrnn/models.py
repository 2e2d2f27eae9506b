"""Ready-made models for the four RNN shapes, in the layers' forward/backward style.

- one-to-many and stream modelling: :class:`LanguageModel` (``generate`` samples);
- many-to-many, T_x = T_y: :class:`SequenceTagger` (bidirectional stack);
- many-to-one: :class:`SequenceClassifier` (final state or mean-pooled outputs;
  ``num_classes=1`` with ``mse_loss`` on the output makes it a regressor);
- encoder-decoder, T_x != T_y: :class:`Seq2Seq` (teacher forcing, greedy decoding).

Everything is time-major: ids ``(T, B)``, features ``(T, B, F)``. ``forward``
is inference (no dropout, nothing stored); ``forward_train`` returns what
``forward`` returns plus a ``backward`` closure that ADDS every parameter
gradient into ``model.grads`` (call ``zero_grad()`` between steps).
Every model is registered with :mod:`pyrnn.io`, so ``pyrnn.io.save`` /
``pyrnn.io.load`` round-trip it.
"""
import numpy as np

from .io import register_model
from .layers import GRU, LSTM, RNN, MinimalGRU
from .nn import (Dropout, Embedding, Linear, Module, as_float_array, as_index_array,
                 check_dtype, once)
from .sampling import as_generator, sample_logits
from .stream import Stream

__all__ = ["LanguageModel", "SequenceTagger", "SequenceClassifier", "Seq2Seq", "CELLS"]

CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN, "mgru": MinimalGRU}


def _cell_class(cell):
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    return CELLS[cell]


def _seeds(seed, n):
    """n independent int seeds from one (so each part gets its own stream)."""
    ss = np.random.SeedSequence(seed)
    return [int(s.generate_state(1)[0]) for s in ss.spawn(n)]


def _ids(ids, name, ndim=2):
    ids = as_index_array(ids, name)
    if ids.ndim != ndim:
        want = "(T, B)" if ndim == 2 else "(T,)"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(ids.shape)}")
    return ids


def _zeros_like_state(state):
    if isinstance(state, tuple):
        return tuple(np.zeros_like(s) for s in state)
    return np.zeros_like(state)


def _copy_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(np.array(s, copy=True) for s in state)
    return np.array(state, copy=True)


# ---------------------------------------------------------------- language model

@register_model
class LanguageModel(Module):
    """Embedding -> recurrent stack -> Linear to the vocabulary, time-major.

    Parameters are named ``embed.weight``, ``rnn.weight_ih_l0`` ...,
    ``head.weight``, ``head.bias``, so a torch module with attributes
    ``embed``/``rnn``/``head`` loads unchanged. ``dropout`` is applied to the
    embeddings, between recurrent layers and before the head (training only).
    The state is the recurrent layer's: an array ``(num_layers, B, H)``, or
    ``(h, c)`` for an LSTM.
    """

    def __init__(self, vocab_size, embed_size=64, hidden_size=256, num_layers=2, cell="lstm",
                 dropout=0.0, dtype=np.float32, seed=None):
        self.vocab_size, self.embed_size = int(vocab_size), int(embed_size)
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.cell, self.dropout = cell, float(dropout)
        self.dtype = check_dtype(dtype)
        self.seed = seed
        s = _seeds(seed, 4)
        self.embed = Embedding(self.vocab_size, self.embed_size, dtype=self.dtype, seed=s[0])
        self.rnn = _cell_class(cell)(self.embed_size, self.hidden_size, self.num_layers,
                                     dropout=self.dropout, dtype=self.dtype, seed=s[1])
        self.head = Linear(self.hidden_size, self.vocab_size, dtype=self.dtype, seed=s[2])
        self.drop = Dropout(self.dropout, seed=s[3])

    def config(self):
        return {"class": "LanguageModel", "vocab_size": self.vocab_size,
                "embed_size": self.embed_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "cell": self.cell, "dropout": self.dropout,
                "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, cfg):
        cfg = {k: v for k, v in cfg.items() if k != "class"}
        return cls(**cfg)

    # -- state ---------------------------------------------------------------
    def init_state(self, batch_size):
        shape = (self.num_layers, int(batch_size), self.hidden_size)
        if self.cell == "lstm":
            return (np.zeros(shape, self.dtype), np.zeros(shape, self.dtype))
        return np.zeros(shape, self.dtype)

    def detach_state(self, state):
        """Copies of the state: carrying it on never reaches back into old windows."""
        return _copy_state(state)

    # -- compute -------------------------------------------------------------
    def forward(self, ids, state=None):
        """ids (T, B) ints -> (logits (T, B, V), state)."""
        ids = _ids(ids, "ids")
        y, state = self.rnn(self.embed(ids), state)
        return self.head(y), state

    def forward_train(self, ids, state=None):
        """-> (logits, state, backward); ``backward(dlogits)`` adds every parameter
        gradient and returns None. The incoming state is a constant (truncated BPTT)."""
        ids = _ids(ids, "ids")
        e, back_embed = self.embed.forward_train(ids)
        e, back_drop_in = self.drop.forward_train(e)
        y, new_state, back_rnn = self.rnn.forward_train(e, state)
        y, back_drop_out = self.drop.forward_train(y)
        logits, back_head = self.head.forward_train(y)

        def backward(dlogits):
            dy = back_drop_out(back_head(dlogits))
            de, _ = back_rnn(dy)  # no gradient flows into the carried state
            back_embed(back_drop_in(de))
            return None

        return logits, new_state, once(backward, "LanguageModel backward")

    def generate(self, prime_ids, length, temperature=1.0, top_k=None, top_p=None, seed=None,
                 state=None):
        """Yield ``length`` sampled token ids (Python ints) one at a time.

        The prime (a non-empty 1-D sequence of ids) is run first; each sampled id
        is fed back with the carried state, so output can be streamed.
        ``temperature=0`` is greedy. After the prime the recurrent stack runs as a
        :class:`pyrnn.stream.Stream`, on a snapshot of its weights: parameters
        changed in place between two tokens are seen once ``params_updated()``
        is called (optimizers and ``load_state_dict`` do).
        """
        prime = _ids(np.asarray(list(prime_ids) if not isinstance(prime_ids, np.ndarray)
                                else prime_ids, dtype=np.int64), "prime_ids", ndim=1)
        if prime.size == 0:
            raise ValueError("prime_ids: expected at least one id, got an empty sequence")
        length = int(length)
        if length < 0:
            raise ValueError(f"length: expected >= 0, got {length}")
        rng = as_generator(seed)

        def gen():
            logits, st = self.forward(prime[:, None], state)
            last = logits[-1, 0]
            if length == 0:
                return
            # one token at a time: a stream step reads packed weights it keeps,
            # where a 1-step layer call would pack them afresh (README, Serving)
            stream = Stream(self.rnn, 1)
            stream.state = st
            for _ in range(length):
                tok = sample_logits(last, temperature, top_k, top_p, rng)
                yield tok
                y = stream.step(self.embed(np.array([[tok]], np.int64))[0])
                last = self.head(y)[0]

        return gen()


# ---------------------------------------------------------------- shared encoder

class _Encoder(Module):
    """Embedding (or float input) -> dropout -> recurrent stack; used by the tagger
    and the classifier."""

    def _build(self, vocab_size, input_size, embed_size, hidden_size, num_layers, cell,
               bidirectional, dropout, dtype, seed):
        if (vocab_size is None) == (input_size is None):
            raise ValueError("give exactly one of vocab_size (integer ids in) "
                             "and input_size (float features in)")
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.input_size = None if input_size is None else int(input_size)
        self.embed_size, self.hidden_size = int(embed_size), int(hidden_size)
        self.num_layers, self.cell = int(num_layers), cell
        self.bidirectional, self.dropout = bool(bidirectional), float(dropout)
        self.dtype = check_dtype(dtype)
        self.seed = seed
        s = _seeds(seed, 4)
        if self.vocab_size is not None:
            self.embed = Embedding(self.vocab_size, self.embed_size, dtype=self.dtype, seed=s[0])
            rnn_in = self.embed_size
        else:
            rnn_in = self.input_size
        self.rnn = _cell_class(cell)(rnn_in, self.hidden_size, self.num_layers,
                                     dropout=self.dropout, bidirectional=self.bidirectional,
                                     dtype=self.dtype, seed=s[1])
        self.drop = Dropout(self.dropout, seed=s[3])
        return s[2]

    def _base_config(self):
        return {"vocab_size": self.vocab_size, "input_size": self.input_size,
                "embed_size": self.embed_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "cell": self.cell,
                "bidirectional": self.bidirectional, "dropout": self.dropout,
                "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, cfg):
        return cls(**{k: v for k, v in cfg.items() if k != "class"})

    def _inputs(self, x, train):
        if self.vocab_size is None:
            x = as_float_array(x, self.dtype, "x")
            if x.ndim != 3 or x.shape[2] != self.input_size:
                raise ValueError(f"x: expected shape (T, B, {self.input_size}), "
                                 f"got {tuple(x.shape)}")
            return x, None
        ids = _ids(x, "ids")
        if train:
            return self.embed.forward_train(ids)
        return self.embed(ids), None

    def _encode_train(self, x, lengths):
        e, back_embed = self._inputs(x, True)
        e, back_drop = self.drop.forward_train(e)
        y, h_n, back_rnn = self.rnn.forward_train(e, None, lengths)

        def backward(dy, dh_n=None):
            de, _ = back_rnn(dy, dh_n)
            de = back_drop(de)
            if back_embed is not None:
                back_embed(de)
        return y, h_n, backward

    def _encode(self, x, lengths):
        e, _ = self._inputs(x, False)
        return self.rnn(e, None, lengths)

    @property
    def _feat(self):
        return self.hidden_size * (2 if self.bidirectional else 1)


# ---------------------------------------------------------------- tagger

@register_model
class SequenceTagger(_Encoder):
    """Many-to-many (T_x = T_y): embedding -> bidirectional stack -> Linear per step.

    ``forward(ids, lengths)`` -> logits ``(T, B, num_tags)``; steps past a
    sequence's length hold the head's bias only: mask them in the loss.
    """

    def __init__(self, vocab_size, num_tags, embed_size=32, hidden_size=64, num_layers=1,
                 cell="lstm", bidirectional=True, dropout=0.0, dtype=np.float32, seed=None,
                 input_size=None):
        head_seed = self._build(vocab_size, input_size, embed_size, hidden_size, num_layers,
                                cell, bidirectional, dropout, dtype, seed)
        self.num_tags = int(num_tags)
        self.head = Linear(self._feat, self.num_tags, dtype=self.dtype, seed=head_seed)

    def config(self):
        return {"class": "SequenceTagger", "num_tags": self.num_tags, **self._base_config()}

    def forward(self, ids, lengths=None):
        y, _ = self._encode(ids, lengths)
        return self.head(y)

    def forward_train(self, ids, lengths=None):
        """-> (logits, backward); ``backward(dlogits)`` returns None."""
        y, _, back_enc = self._encode_train(ids, lengths)
        y, back_drop = self.drop.forward_train(y)
        logits, back_head = self.head.forward_train(y)

        def backward(dlogits):
            back_enc(back_drop(back_head(dlogits)))
            return None
        return logits, once(backward, "SequenceTagger backward")

    def predict(self, ids, lengths=None):
        """Tag ids (T, B), argmax per step (padding steps too: mask them yourself)."""
        return self.forward(ids, lengths).argmax(axis=-1)


# ---------------------------------------------------------------- classifier

@register_model
class SequenceClassifier(_Encoder):
    """Many-to-one: recurrent stack -> one feature vector per sequence -> Linear.

    ``pooling="last"`` uses the last layer's final state (both directions when
    bidirectional; with ``lengths`` the state after each sequence's own last
    step), ``"mean"`` the mean of the outputs over each sequence's steps.
    ``vocab_size`` for integer ids ``(T, B)``, or ``input_size`` for float
    features ``(T, B, F)``. ``num_classes=1`` with ``mse_loss`` on the output
    gives a regressor.
    """

    def __init__(self, vocab_size=None, num_classes=2, embed_size=32, hidden_size=64,
                 num_layers=1, cell="lstm", bidirectional=False, pooling="last", dropout=0.0,
                 dtype=np.float32, seed=None, input_size=None):
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        head_seed = self._build(vocab_size, input_size, embed_size, hidden_size, num_layers,
                                cell, bidirectional, dropout, dtype, seed)
        self.num_classes, self.pooling = int(num_classes), pooling
        self.head = Linear(self._feat, self.num_classes, dtype=self.dtype, seed=head_seed)

    def config(self):
        return {"class": "SequenceClassifier", "num_classes": self.num_classes,
                "pooling": self.pooling, **self._base_config()}

    def _lengths(self, T, B, lengths):
        if lengths is None:
            return np.full(B, T, np.int64)
        return as_index_array(lengths, "lengths")

    def _pool(self, y, h_n, lengths):
        D = 2 if self.bidirectional else 1
        if self.pooling == "last":
            h = h_n[0] if isinstance(h_n, tuple) else h_n
            # (L*D, B, H): the last layer's directions, forward first, as in y
            return np.concatenate(list(h[-D:]), axis=1)
        T, B = y.shape[0], y.shape[1]
        n = np.maximum(self._lengths(T, B, lengths), 1).astype(self.dtype)
        return y.sum(axis=0) / n[:, None]  # y is zero past each length

    def forward(self, x, lengths=None):
        """x: ids (T, B) or features (T, B, F) -> logits (B, num_classes)."""
        y, h_n = self._encode(x, lengths)
        return self.head(self._pool(y, h_n, lengths))

    def forward_train(self, x, lengths=None):
        """-> (logits, backward); ``backward(dlogits)`` returns None."""
        y, h_n, back_enc = self._encode_train(x, lengths)
        feat = self._pool(y, h_n, lengths)
        feat, back_drop = self.drop.forward_train(feat)
        logits, back_head = self.head.forward_train(feat)
        D, H = (2 if self.bidirectional else 1), self.hidden_size

        def backward(dlogits):
            dfeat = back_drop(back_head(dlogits))
            if self.pooling == "last":
                h = h_n[0] if isinstance(h_n, tuple) else h_n
                dh = np.zeros_like(h)
                for d in range(D):
                    dh[h.shape[0] - D + d] = dfeat[:, d * H:(d + 1) * H]
                dh_n = (dh, np.zeros_like(h_n[1])) if isinstance(h_n, tuple) else dh
                back_enc(np.zeros_like(y), dh_n)
            else:
                T, B = y.shape[0], y.shape[1]
                lens = self._lengths(T, B, lengths)
                n = np.maximum(lens, 1).astype(self.dtype)
                dy = np.broadcast_to(dfeat / n[:, None], y.shape).copy()
                dy[np.arange(T)[:, None] >= lens[None, :]] = 0
                back_enc(dy)
            return None
        return logits, once(backward, "SequenceClassifier backward")

    def predict(self, x, lengths=None):
        """Class ids (B,)."""
        return self.forward(x, lengths).argmax(axis=-1)


# ---------------------------------------------------------------- seq2seq

@register_model
class Seq2Seq(Module):
    """Encoder-decoder (T_x != T_y) without attention.

    The encoder (embedding -> unidirectional stack) reads ``src (T_x, B)``
    with ``src_lengths``; its final state (after each sequence's own last step)
    initialises the decoder stack (same cell, size and depth), which reads
    ``tgt_in (T_y, B)`` (BOS followed by the target, teacher forcing) and
    predicts the next token at every step through ``head``.
    """

    def __init__(self, src_vocab, tgt_vocab, embed_size=32, hidden_size=128, num_layers=1,
                 cell="lstm", dropout=0.0, dtype=np.float32, seed=None):
        self.src_vocab, self.tgt_vocab = int(src_vocab), int(tgt_vocab)
        self.embed_size, self.hidden_size = int(embed_size), int(hidden_size)
        self.num_layers, self.cell, self.dropout = int(num_layers), cell, float(dropout)
        self.dtype = check_dtype(dtype)
        self.seed = seed
        s = _seeds(seed, 6)
        C = _cell_class(cell)
        self.src_embed = Embedding(self.src_vocab, self.embed_size, dtype=self.dtype, seed=s[0])
        self.encoder = C(self.embed_size, self.hidden_size, self.num_layers,
                         dropout=self.dropout, dtype=self.dtype, seed=s[1])
        self.tgt_embed = Embedding(self.tgt_vocab, self.embed_size, dtype=self.dtype, seed=s[2])
        self.decoder = C(self.embed_size, self.hidden_size, self.num_layers,
                         dropout=self.dropout, dtype=self.dtype, seed=s[3])
        self.head = Linear(self.hidden_size, self.tgt_vocab, dtype=self.dtype, seed=s[4])
        self.drop = Dropout(self.dropout, seed=s[5])

    def config(self):
        return {"class": "Seq2Seq", "src_vocab": self.src_vocab, "tgt_vocab": self.tgt_vocab,
                "embed_size": self.embed_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "cell": self.cell, "dropout": self.dropout,
                "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, cfg):
        return cls(**{k: v for k, v in cfg.items() if k != "class"})

    def encode(self, src, src_lengths=None):
        """The encoder's final state: the decoder's initial state."""
        src = _ids(src, "src")
        _, state = self.encoder(self.src_embed(src), None, src_lengths)
        return state

    def decode_step(self, tokens, state):
        """One decoder step: tokens (B,) -> (logits (B, V), new state)."""
        tok = as_index_array(tokens, "tokens").reshape(1, -1)
        y, state = self.decoder(self.tgt_embed(tok), state)
        return self.head(y[0]), state

    def forward(self, src, src_lengths, tgt_in):
        """Teacher-forced logits (T_y, B, tgt_vocab), no gradient bookkeeping."""
        state = self.encode(src, src_lengths)
        y, _ = self.decoder(self.tgt_embed(_ids(tgt_in, "tgt_in")), state)
        return self.head(y)

    def forward_train(self, src, src_lengths, tgt_in):
        """-> (logits (T_y, B, tgt_vocab), backward); ``backward(dlogits)`` returns None."""
        src, tgt_in = _ids(src, "src"), _ids(tgt_in, "tgt_in")
        if src.shape[1] != tgt_in.shape[1]:
            raise ValueError(f"tgt_in: expected shape (T_y, {src.shape[1]}), "
                             f"got {tuple(tgt_in.shape)}")
        es, back_src = self.src_embed.forward_train(src)
        es, back_drop_s = self.drop.forward_train(es)
        ys, state, back_enc = self.encoder.forward_train(es, None, src_lengths)
        et, back_tgt = self.tgt_embed.forward_train(tgt_in)
        et, back_drop_t = self.drop.forward_train(et)
        yt, _, back_dec = self.decoder.forward_train(et, state)
        yt, back_drop_y = self.drop.forward_train(yt)
        logits, back_head = self.head.forward_train(yt)

        def backward(dlogits):
            det, dstate = back_dec(back_drop_y(back_head(dlogits)))
            back_tgt(back_drop_t(det))
            # the encoder's outputs are unused: its gradient enters through the state only
            des, _ = back_enc(np.zeros_like(ys), dstate)
            back_src(back_drop_s(des))
            return None
        return logits, once(backward, "Seq2Seq backward")

    def _decode(self, src, src_lengths, max_len, bos_id, eos_id, pick, pad_id):
        src = _ids(src, "src")
        B = src.shape[1]
        pad = eos_id if pad_id is None else pad_id
        out = np.full((int(max_len), B), pad, np.int64)
        state = self.encode(src, src_lengths)
        if B == 0 or int(max_len) == 0:
            return out
        # the decoder as a stream: decode_step's 1-step layer call would pack its
        # weights afresh at every step
        stream = Stream(self.decoder, B)
        stream.state = state
        tok = np.full(B, bos_id, np.int64)
        done = np.zeros(B, bool)
        for t in range(int(max_len)):
            y = stream.step(self.tgt_embed(tok.reshape(1, -1))[0])
            tok = pick(self.head(y))
            out[t] = np.where(done, pad, tok)
            done |= tok == eos_id
            if done.all():
                break
        return out

    def greedy_decode(self, src, src_lengths, max_len, bos_id, eos_id, pad_id=None):
        """Argmax decoding -> ids (max_len, B); each row's EOS is kept, the steps
        after it hold ``pad_id`` (default: ``eos_id``). The decoder runs as a
        :class:`pyrnn.stream.Stream` of batch B (the same ids as a loop of
        :meth:`decode_step`)."""
        return self._decode(src, src_lengths, max_len, bos_id, eos_id,
                            lambda lg: lg.argmax(axis=-1), pad_id)

    def generate(self, src, src_lengths, max_len, bos_id, eos_id, temperature=1.0, top_k=None,
                 top_p=None, seed=None, pad_id=None):
        """Sampled decoding (one-to-many from the encoded source); same layout as
        :meth:`greedy_decode`."""
        rng = as_generator(seed)
        return self._decode(src, src_lengths, max_len, bos_id, eos_id,
                            lambda lg: sample_logits(lg, temperature, top_k, top_p, rng), pad_id)
