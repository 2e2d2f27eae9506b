"""Character- and word-level vocabularies for language models.

Tokenisation
------------
- ``level="char"``: every Unicode code point is a token; ``"\\n"`` is an
  ordinary character.
- ``level="word"``: the text is cut at ``"\\n"``; each line is split on
  whitespace (``str.split()``), and every newline becomes the ``"<eos>"``
  token. So ``"a b\\nc"`` -> ``["a", "b", "<eos>", "c"]``, and ``decode`` turns
  ``<eos>`` back into ``"\\n"``: for text with single spaces and no leading
  or trailing blanks on a line, ``decode(encode(text)) == text``. If
  ``"<eos>"`` is not among the specials, newlines are plain whitespace.

A text may also be given already tokenised, as a list or tuple of strings;
it is then used as is at either level.

Ids and order
-------------
Specials come first, in the order given (default ``<pad>`` = 0, ``<unk>`` = 1,
``<eos>`` = 2). The other tokens follow by descending frequency; ties keep
the order of first appearance in the input, so the same input always gives
the same ids. ``max_size`` counts the specials. The roles pad/unk/eos are
found by the names ``"<pad>"``, ``"<unk>"``, ``"<eos>"``; a missing one has
id ``None``. Tokens in the input equal to a special's name (``"<unk>"`` in the
Penn Treebank, say) map to that special.
"""
import numpy as np

__all__ = ["Vocab", "PAD", "UNK", "EOS"]

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
_LEVELS = ("char", "word")
_FORMAT = "pyrnn.Vocab"
_FORMAT_VERSION = 1


def _check_level(level):
    if level not in _LEVELS:
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    return level


def _check_specials(specials):
    if isinstance(specials, str) or not isinstance(specials, (list, tuple)):
        raise TypeError(
            f"specials must be a tuple or list of strings, got {type(specials).__name__}")
    for s in specials:
        if not isinstance(s, str) or not s:
            raise TypeError(f"specials must hold non-empty strings, got {s!r}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"specials must be distinct, got {tuple(specials)!r}")
    return tuple(specials)


def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


class Vocab:
    """A token <-> id mapping. Build one with :meth:`Vocab.build`.

    ``Vocab(tokens, level, specials)`` takes the non-special tokens in id
    order; ids are ``specials + tokens``. Instances are treated as immutable.
    """

    def __init__(self, tokens=(), level="char", specials=(PAD, UNK, EOS)):
        self._level = _check_level(level)
        self._specials = _check_specials(specials)
        if isinstance(tokens, str):
            raise TypeError("tokens must be a list of strings, not a single str")
        tokens = tuple(tokens)
        for t in tokens:
            if not isinstance(t, str) or not t:
                raise TypeError(f"tokens must hold non-empty strings, got {t!r}")
        itos = self._specials + tokens
        stoi = {}
        for i, t in enumerate(itos):
            if t in stoi:
                raise ValueError(f"tokens: {t!r} appears twice (or is also a special)")
            stoi[t] = i
        self._itos = itos
        self._stoi = stoi
        self._char_table = None  # code point -> id, built on first char encode

    # -- construction -------------------------------------------------------

    @classmethod
    def build(cls, texts_or_tokens, level="char", min_freq=1, max_size=None,
              specials=(PAD, UNK, EOS)):
        """Count tokens in ``texts_or_tokens`` and build a vocabulary.

        ``texts_or_tokens``: one string, or an iterable whose items are
        strings (texts, tokenised by ``level``) or lists/tuples of token
        strings (used as is). Tokens seen fewer than ``min_freq`` times are
        dropped; at most ``max_size`` ids in all (specials included).
        """
        level = _check_level(level)
        specials = _check_specials(specials)
        if not _is_int(min_freq) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        if max_size is not None and (not _is_int(max_size) or max_size < len(specials)):
            raise ValueError(
                f"max_size must be None or an integer >= len(specials) = "
                f"{len(specials)}, got {max_size!r}")
        if isinstance(texts_or_tokens, str):
            texts_or_tokens = [texts_or_tokens]
        elif isinstance(texts_or_tokens, (bytes, bytearray)) or not hasattr(
                texts_or_tokens, "__iter__"):
            raise TypeError(
                "texts_or_tokens must be a str or an iterable of str / token lists, "
                f"got {type(texts_or_tokens).__name__}")
        tokenizer = _Tokenizer(level, EOS in specials)
        special_set = set(specials)
        counts = {}  # dicts keep insertion order: ties resolve by first appearance
        for n, item in enumerate(texts_or_tokens):
            toks = tokenizer(item, f"texts_or_tokens[{n}]")
            for t in toks:
                if t not in special_set:
                    counts[t] = counts.get(t, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable sort
        kept = [t for t, c in ranked if c >= min_freq]
        if max_size is not None:
            kept = kept[:max_size - len(specials)]
        return cls(kept, level=level, specials=specials)

    # -- basic queries --------------------------------------------------------

    def __len__(self):
        return len(self._itos)

    def __contains__(self, token):
        return token in self._stoi

    def __eq__(self, other):
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self._level == other._level and self._specials == other._specials
                and self._itos == other._itos)

    __hash__ = None

    def __repr__(self):
        return f"Vocab(level={self._level!r}, size={len(self)})"

    @property
    def level(self):
        return self._level

    @property
    def specials(self):
        return self._specials

    @property
    def tokens(self):
        """All tokens in id order (specials first)."""
        return self._itos

    @property
    def pad_id(self):
        return self._stoi.get(PAD) if PAD in self._specials else None

    @property
    def unk_id(self):
        return self._stoi.get(UNK) if UNK in self._specials else None

    @property
    def eos_id(self):
        return self._stoi.get(EOS) if EOS in self._specials else None

    def token_to_id(self, token):
        """Id of ``token``; unknown tokens give the ``<unk>`` id (ValueError if none)."""
        i = self._stoi.get(token)
        if i is None:
            i = self.unk_id
            if i is None:
                raise ValueError(f"token {token!r} is not in the vocabulary and it has no <unk>")
        return i

    def id_to_token(self, i):
        if not _is_int(i):
            raise TypeError(f"i must be an integer, got {type(i).__name__}")
        if not 0 <= i < len(self._itos):
            raise ValueError(f"i must be in [0, {len(self._itos)}), got {i}")
        return self._itos[i]

    # -- encode / decode --------------------------------------------------------

    def tokenize(self, text):
        """Split ``text`` into tokens by this vocabulary's level."""
        return _Tokenizer(self._level, self.eos_id is not None)(text, "text")

    def encode(self, text, add_eos=False):
        """Ids of ``text`` (a str, or a list/tuple of tokens) as int64 array.

        Unknown tokens map to ``<unk>``. ``add_eos`` appends ``<eos>``.
        """
        if add_eos and self.eos_id is None:
            raise ValueError("add_eos=True but the vocabulary has no <eos> special")
        if self._level == "char" and isinstance(text, str):
            ids = self._encode_chars(text)
        else:
            toks = self.tokenize(text)
            ids = np.fromiter((self.token_to_id(t) for t in toks), dtype=np.int64,
                              count=len(toks))
        if add_eos:
            ids = np.append(ids, np.int64(self.eos_id))
        return ids

    def _encode_chars(self, text):
        # Vectorised: a table from code point to id avoids a dict lookup per char,
        # which matters for multi-MB training corpora.
        if self._char_table is None:
            cps = [ord(t) for t in self._itos if len(t) == 1]
            fill = -1 if self.unk_id is None else self.unk_id
            table = np.full(max(cps, default=-1) + 1, fill, dtype=np.int64)
            for t, i in self._stoi.items():
                if len(t) == 1:
                    table[ord(t)] = i
            self._char_table = table
        table = self._char_table
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        fill = -1 if self.unk_id is None else self.unk_id
        ids = np.full(cps.shape, fill, dtype=np.int64)
        inside = cps < table.size
        ids[inside] = table[cps[inside]]
        if fill == -1 and (ids < 0).any():
            bad = text[int(np.argmax(ids < 0))]
            raise ValueError(f"text: character {bad!r} is not in the vocabulary and it has no <unk>")
        return ids

    def decode(self, ids, skip_specials=False):
        """Text of ``ids`` (1-D integers).

        At word level tokens are joined by single spaces and ``<eos>`` becomes
        ``"\\n"``. Other specials are written by name, or dropped when
        ``skip_specials`` (at char level ``<eos>`` is dropped too).
        """
        arr = np.asarray(ids)
        if arr.dtype == bool or arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= len(self._itos)):
            bad = arr[(arr < 0) | (arr >= len(self._itos))][0]
            raise ValueError(f"ids must be in [0, {len(self._itos)}), got {int(bad)}")
        itos = self._itos
        nspec = len(self._specials)
        eos = self.eos_id
        if self._level == "char":
            if skip_specials:
                return "".join(itos[i] for i in arr.tolist() if i >= nspec)
            return "".join(itos[i] for i in arr.tolist())
        lines, words = [], []
        for i in arr.tolist():
            if i == eos:
                lines.append(" ".join(words))
                words = []
            elif i >= nspec or not skip_specials:
                words.append(itos[i])
        lines.append(" ".join(words))
        return "\n".join(lines)

    # -- serialisation ----------------------------------------------------------

    def to_dict(self):
        """A JSON-able dict; ``Vocab.from_dict(v.to_dict()) == v``."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "level": self._level,
            "specials": list(self._specials),
            "tokens": list(self._itos[len(self._specials):]),
        }

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict):
            raise TypeError(f"d must be a dict, got {type(d).__name__}")
        if d.get("format") != _FORMAT:
            raise ValueError(f"d: 'format' must be {_FORMAT!r}, got {d.get('format')!r}")
        if d.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"d: unsupported vocabulary version {d.get('version')!r} "
                f"(this pyrnn reads {_FORMAT_VERSION})")
        missing = [k for k in ("level", "specials", "tokens") if k not in d]
        if missing:
            raise ValueError(f"d: missing keys {missing}")
        if not isinstance(d["tokens"], list):
            raise TypeError(f"d['tokens'] must be a list, got {type(d['tokens']).__name__}")
        return cls(d["tokens"], level=d["level"], specials=d["specials"])


class _Tokenizer:
    def __init__(self, level, newline_is_eos):
        self.level = level
        self.newline_is_eos = newline_is_eos

    def __call__(self, item, name):
        if isinstance(item, str):
            if self.level == "char":
                return list(item)
            if not self.newline_is_eos:
                return item.split()
            out = []
            for n, line in enumerate(item.split("\n")):
                if n:
                    out.append(EOS)
                out.extend(line.split())
            return out
        if isinstance(item, (list, tuple)):
            for t in item:
                if not isinstance(t, str):
                    raise TypeError(f"{name} must hold token strings, got {type(t).__name__}")
            return list(item)
        raise TypeError(
            f"{name} must be a str or a list/tuple of token strings, got {type(item).__name__}")
