"""The ``pyrnn`` command: demo, train, sample, info, bench.

Every user error (missing file, bad option, corrupt model) ends in one line
on stderr and a non-zero exit status; tracebacks are for bugs only.
"""
import argparse
import glob
import os
import sys
import time

__all__ = ["main"]

DEMO_OUT = "pyrnn-demo.safetensors"
_CELLS = ("lstm", "gru", "rnn", "mgru")


class UserError(Exception):
    """A problem the user can fix; printed as one line, no traceback."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage before the error; one line is easier to act on
    def error(self, message):
        raise UserError(f"{message} (see '{self.prog} --help')")


def _positive(kind):
    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
        return v
    parse.__name__ = kind.__name__
    return parse


def _nonneg_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}")
    return v


def _top_p(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {s!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {s!r}")
    return v


def _bptt(s):
    try:
        parts = [int(p) for p in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K or K1,K2, got {s!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 1 or parts[-1] < parts[0]:
        raise argparse.ArgumentTypeError(f"expected K or K1,K2 with 1 <= K1 <= K2, got {s!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


_EPILOG = {
    "main": """examples:
  pyrnn demo                          train a char LSTM on Python's own source (~3 min)
  pyrnn sample pyrnn-demo.safetensors --prime "def " --temperature 0.8
  pyrnn train --text book.txt --minutes 10 --out book.safetensors
  pyrnn info book.safetensors
  pyrnn bench --quick""",
    "demo": """examples:
  pyrnn demo                          defaults: LSTM, 2 x 256, about 3 minutes
  pyrnn demo --minutes 1 --cell gru --hidden 128
  pyrnn demo --threads 1 --seed 3 --out /tmp/demo.safetensors""",
    "train": """examples:
  pyrnn train --text a.txt b.txt --minutes 5 --out model.safetensors
  pyrnn train --text corpus.txt --level word --cell gru --bptt 35 --steps 2000
  pyrnn train --text a.txt --steps 2000 --resume model.safetensors.ckpt   (continue a stopped run)
Ctrl-C saves a checkpoint (OUT.ckpt) and the model; --resume with the same
data and options continues exactly where the run stopped.""",
    "sample": """examples:
  pyrnn sample model.safetensors --prime "def " --length 400
  pyrnn sample model.safetensors --temperature 0.6 --top-k 20 --seed 1
  pyrnn sample model.safetensors --temperature 0   (greedy)""",
    "info": """examples:
  pyrnn info pyrnn-demo.safetensors""",
    "bench": """examples:
  pyrnn bench --quick
  pyrnn bench --compare run1.json run2.json   targets of saved runs side by side
  pyrnn bench --help                  all options of the benchmark""",
}


def _add_model_args(p, hidden, layers):
    p.add_argument("--cell", choices=_CELLS, default="lstm", help="recurrent cell (default lstm)")
    p.add_argument("--hidden", type=_positive(int), default=hidden,
                   help=f"hidden units per layer (default {hidden})")
    p.add_argument("--layers", type=_positive(int), default=layers,
                   help=f"recurrent layers (default {layers})")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, dropout and data order")
    p.add_argument("--threads", type=_positive(int), default=None,
                   help="compute threads (default: every core this process may use)")


def _parser():
    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="pyrnn", description="Fast CPU recurrent neural networks: "
                "train, sample and inspect RNN language models.",
                epilog=_EPILOG["main"], formatter_class=fmt)
    from . import __version__
    p.add_argument("--version", action="version", version=f"pyrnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="train a character LSTM on the Python standard library",
                       description="Train a character-level language model on this machine's "
                       "Python standard library source (no download), report held-out bits "
                       "per character and print samples.",
                       epilog=_EPILOG["demo"], formatter_class=fmt)
    d.add_argument("--minutes", type=_positive(float), default=3.0,
                   help="total time budget, training plus evaluation (default 3)")
    _add_model_args(d, hidden=256, layers=2)
    d.add_argument("--out", default=DEMO_OUT, help=f"model file to write (default {DEMO_OUT})")

    t = sub.add_parser("train", help="train a language model on text files",
                       description="Train a language model with truncated BPTT on text files.",
                       epilog=_EPILOG["train"], formatter_class=fmt)
    t.add_argument("--text", nargs="+", required=True, metavar="FILE", help="UTF-8 text files")
    t.add_argument("--level", choices=("char", "word"), default="char", help="token level")
    _add_model_args(t, hidden=256, layers=2)
    t.add_argument("--embed", type=_positive(int), default=64, help="embedding size (default 64)")
    t.add_argument("--dropout", type=_nonneg_float, default=0.0, help="dropout (default 0)")
    t.add_argument("--bptt", type=_bptt, default=64, help="K or K1,K2 (default 64)")
    t.add_argument("--batch-size", type=_positive(int), default=32, help="parallel streams")
    t.add_argument("--lr", type=_positive(float), default=3e-3, help="Adam learning rate")
    t.add_argument("--clip", type=_positive(float), default=5.0, help="gradient norm clip")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--steps", type=_positive(int), help="total training steps")
    g.add_argument("--minutes", type=_positive(float), help="training time budget")
    g.add_argument("--epochs", type=_positive(int), help="passes over the text (default 1)")
    t.add_argument("--valid-fraction", type=_nonneg_float, default=0.05,
                   help="share of the text held out (its end) for validation (default 0.05)")
    t.add_argument("--min-freq", type=_positive(int), default=1, help="rarer tokens become <unk>")
    t.add_argument("--max-vocab", type=_positive(int), default=None, help="vocabulary size cap")
    t.add_argument("--out", default="model.safetensors", help="model file to write")
    t.add_argument("--checkpoint-every", type=_positive(int), default=200,
                   help="steps between checkpoints in OUT.ckpt (default 200)")
    t.add_argument("--resume", metavar="CKPT", help="continue the run saved in this checkpoint")

    s = sub.add_parser("sample", help="generate text from a model, streamed as it is produced",
                       description="Generate text from a trained model.",
                       epilog=_EPILOG["sample"], formatter_class=fmt)
    s.add_argument("model", metavar="MODEL", help="model file")
    s.add_argument("--prime", default=None, help="text to start from (default: a newline)")
    s.add_argument("--length", type=int, default=500, help="tokens to generate (default 500)")
    s.add_argument("--temperature", type=_nonneg_float, default=0.8, help="0 = greedy")
    s.add_argument("--top-k", type=_positive(int), default=None, help="keep the k likeliest")
    s.add_argument("--top-p", type=_top_p, default=None, help="nucleus sampling mass")
    s.add_argument("--seed", type=int, default=None, help="sampling seed")

    i = sub.add_parser("info", help="architecture, parameters, vocabulary, training metrics",
                       description="Describe a model file.", epilog=_EPILOG["info"],
                       formatter_class=fmt)
    i.add_argument("model", metavar="MODEL", help="model file")

    sub.add_parser("bench", help="side-by-side speed benchmark (pyrnn bench --help)",
                   description="Run the benchmark; every option goes to pyrnn.bench.",
                   epilog=_EPILOG["bench"], formatter_class=fmt, add_help=False)
    return p


# -- helpers ------------------------------------------------------------------

def _say(*a):
    print(*a, flush=True)


def _threads(n):
    if n is not None:
        from . import set_num_threads
        set_num_threads(n)


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a text file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def _load_model(path):
    from .io import load
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory, expected a model file")
    try:
        model = load(path)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"cannot load model: {e}") from None
    meta = getattr(model, "metadata", {}) or {}
    if "vocab" not in meta:
        raise UserError(f"{path}: the model has no vocabulary, so it cannot turn text into ids")
    from .vocab import Vocab
    try:
        vocab = Vocab.from_dict(meta["vocab"])
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: bad vocabulary: {e}") from None
    return model, vocab, meta


def _stream_sample(model, vocab, prime, length, temperature, top_k=None, top_p=None,
                   seed=None, out=sys.stdout):
    """Write ``prime`` then each generated token as soon as it exists."""
    import numpy as np
    if prime is None:  # start as after a line break; print nothing for it
        ids = vocab.encode("\n") if vocab.level == "char" or vocab.eos_id is None \
            else np.array([vocab.eos_id], np.int64)
        prime = ""
    else:
        ids = vocab.encode(prime)
    if ids.size == 0:
        raise UserError("--prime: the prime has no tokens at this model's level")
    word = vocab.level == "word"
    out.write(prime)
    out.flush()
    eos = vocab.eos_id
    for tok in model.generate(ids, length, temperature=temperature, top_k=top_k,
                              top_p=top_p, seed=seed):
        if word:
            piece = "\n" if tok == eos else " " + vocab.decode([tok])
        else:
            piece = vocab.decode([tok], skip_specials=True)
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()


def _param_count(model):
    return int(sum(p.size for p in model.params.values()))


# -- demo ---------------------------------------------------------------------

def _stdlib_corpus(max_chars=3_000_000, valid_every=20):
    """Top-level stdlib *.py files, sorted by name; every ``valid_every``-th file
    is held out, so validation text comes from files never trained on."""
    import sysconfig
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(root, "*.py")))
    if not files:
        raise UserError(f"no Python source files found in the standard library at {root}")
    train, valid, n = [], [], 0
    for k, f in enumerate(files):
        try:
            with open(f, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            continue
        if k % valid_every == valid_every // 2:
            valid.append(text)
        elif n < max_chars:
            train.append(text)
            n += len(text)
    return root, "\n".join(train), "\n".join(valid)


def cmd_demo(a):
    import numpy as np
    from . import io
    from .models import LanguageModel
    from .optim import Adam
    from .train import Trainer
    from .vocab import Vocab

    t_start = time.perf_counter()
    _threads(a.threads)
    from . import get_num_threads
    root, train_text, valid_text = _stdlib_corpus()
    vocab = Vocab.build(train_text, level="char", min_freq=20)
    train_ids = vocab.encode(train_text)
    valid_ids = vocab.encode(valid_text)[:40_000]  # enough for a stable bpc, quick to score
    _say(f"corpus: {len(train_ids):,} training chars from {root}/*.py, "
         f"{len(valid_ids):,} held-out chars from other files; vocabulary {len(vocab)}")
    model = LanguageModel(len(vocab), embed_size=64, hidden_size=a.hidden, num_layers=a.layers,
                          cell=a.cell, seed=a.seed)
    _say(f"model: {a.cell.upper()} {a.layers} x {a.hidden}, {_param_count(model):,} parameters, "
         f"{get_num_threads()} threads")
    opt = Adam(model, lr=4e-3)
    trainer = Trainer(model, opt, bptt=64, batch_size=32, clip_norm=5.0, unit="char",
                      on_interrupt="return", seed=a.seed)
    # leave time for the held-out pass, the samples and the save
    budget = a.minutes * 60.0
    reserve = min(0.2 * budget, 20.0)
    out = trainer.fit(train_ids, steps=10**9, max_time=max(budget - reserve, 1.0))
    if trainer.interrupted:
        _say("interrupted: evaluating and saving what was learned so far")
    ev = trainer.evaluate(valid_ids)
    metrics = {"steps": trainer.step, "train_bpc": out["bpc"], "valid_bpc": ev["bpc"],
               "valid_accuracy": ev["accuracy"], "chars_per_s": out["tokens_per_s"],
               "corpus": "python-stdlib", "train_chars": int(len(train_ids))}
    io.save(model, a.out, metadata={"vocab": vocab.to_dict(), "metrics": metrics})
    _say(f"\nheld-out: {ev['bpc']:.3f} bits/char, accuracy {ev['accuracy']:.1%} "
         f"after {trainer.step} steps ({out['tokens_per_s']:,.0f} chars/s)")
    for temp in (0.5, 0.8, 1.0):
        _say(f"\n--- sample, temperature {temp} ---")
        _stream_sample(model, vocab, "def ", 300, temp, seed=a.seed)
    _say(f"\nwall time {time.perf_counter() - t_start:.0f} s; model saved to {a.out}")
    _say(f"try: pyrnn sample {a.out} --prime \"class \" --temperature 0.7")
    return 0


# -- train --------------------------------------------------------------------

def cmd_train(a):
    import numpy as np
    from . import io
    from .io import load_arrays
    from .models import LanguageModel
    from .optim import Adam
    from .train import Trainer
    from .vocab import Vocab

    _threads(a.threads)
    if a.valid_fraction >= 0.5:
        raise UserError(f"--valid-fraction: expected a number below 0.5, got {a.valid_fraction}")
    text = "\n".join(_read_text(p) for p in a.text)
    cut = int(len(text) * (1.0 - a.valid_fraction))
    train_text, valid_text = text[:cut], text[cut:]
    ckpt = a.out + ".ckpt"
    if a.resume:
        if not os.path.exists(a.resume):
            raise UserError(f"{a.resume}: no such file")
        try:
            _, meta = load_arrays(a.resume)
            vocab = Vocab.from_dict(meta["vocab"])
            cfg = dict(meta["model_config"])
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"--resume: {a.resume} is not a usable checkpoint: {e}") from None
        cfg.pop("class", None)
        model = LanguageModel(**cfg)
        ckpt = a.resume
    else:
        vocab = Vocab.build(train_text, level=a.level, min_freq=a.min_freq,
                            max_size=a.max_vocab)
        model = LanguageModel(len(vocab), embed_size=a.embed, hidden_size=a.hidden,
                              num_layers=a.layers, cell=a.cell, dropout=a.dropout, seed=a.seed)
    train_ids = vocab.encode(train_text)
    valid_ids = vocab.encode(valid_text) if a.valid_fraction > 0 else None
    if valid_ids is not None and valid_ids.size < 4:
        valid_ids = None
    need = 2 * a.batch_size
    if train_ids.size < need:
        raise UserError(f"the text has {train_ids.size} tokens; --batch-size {a.batch_size} "
                        f"needs at least {need}")
    opt = Adam(model, lr=a.lr)
    unit = "char" if vocab.level == "char" else "word"
    trainer = Trainer(model, opt, bptt=a.bptt, batch_size=a.batch_size, clip_norm=a.clip,
                      unit=unit, checkpoint_path=ckpt, checkpoint_every=a.checkpoint_every,
                      on_interrupt="return", vocab=vocab, seed=a.seed)
    if a.resume:
        try:
            trainer.resume(a.resume)
        except ValueError as e:
            raise UserError(f"--resume: {e}") from None
        _say(f"resuming {a.resume} at step {trainer.step}")
    _say(f"{train_ids.size:,} training {unit}s, vocabulary {len(vocab)}, "
         f"{_param_count(model):,} parameters")
    steps = a.steps
    if a.minutes is None and steps is None:
        steps = trainer.steps_per_epoch(train_ids.size // a.batch_size) * (a.epochs or 1)
    try:
        out = trainer.fit(train_ids, steps=steps if steps is not None else 10**9,
                          max_time=None if a.minutes is None else a.minutes * 60)
    except ValueError as e:
        raise UserError(str(e)) from None
    metrics = {"steps": trainer.step, "train_loss": out["loss"], "train_bpc": out["bpc"],
               f"{unit}s_per_s": out["tokens_per_s"]}
    if valid_ids is not None:
        ev = trainer.evaluate(valid_ids)
        metrics.update(valid_loss=ev["loss"], valid_bpc=ev["bpc"],
                       valid_perplexity=ev["perplexity"], valid_accuracy=ev["accuracy"])
        _say(f"held-out: loss {ev['loss']:.4f}, {ev['bpc']:.3f} bits/{unit}, "
             f"perplexity {ev['perplexity']:.2f}")
    io.save(model, a.out, metadata={"vocab": vocab.to_dict(), "metrics": metrics})
    if trainer.interrupted:
        _say(f"interrupted at step {trainer.step}; checkpoint {ckpt}; continue with "
             f"the same command and --resume {ckpt}")
    _say(f"model saved to {a.out}")
    return 0


# -- sample / info -------------------------------------------------------------

def cmd_sample(a):
    model, vocab, _ = _load_model(a.model)
    if a.length < 0:
        raise UserError(f"--length: expected a number >= 0, got {a.length}")
    if a.seed is not None and a.seed < 0:
        raise UserError(f"--seed: expected a number >= 0, got {a.seed}")
    _stream_sample(model, vocab, a.prime, a.length, a.temperature, a.top_k, a.top_p, a.seed)
    return 0


def cmd_info(a):
    model, vocab, meta = _load_model(a.model)
    cfg = model.config()
    _say(f"file:        {a.model} ({os.path.getsize(a.model):,} bytes)")
    _say(f"model:       {cfg.get('class')}")
    for k, v in cfg.items():
        if k != "class":
            _say(f"  {k + ':':<14}{v}")
    _say(f"parameters:  {_param_count(model):,}")
    _say(f"vocabulary:  {len(vocab)} {vocab.level} tokens")
    metrics = meta.get("metrics") or {}
    if metrics:
        _say("training metrics:")
        for k, v in metrics.items():
            _say(f"  {k + ':':<18}{v:.4f}" if isinstance(v, float) else f"  {k + ':':<18}{v}")
    return 0


_COMMANDS = {"demo": cmd_demo, "train": cmd_train, "sample": cmd_sample, "info": cmd_info}


def main(argv=None):
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # its own parser owns every option
        from .bench import main as bench_main
        return bench_main(argv[1:])
    parser = _parser()
    cmd = next((x for x in argv if x in _COMMANDS), "")
    try:
        try:
            a = parser.parse_args(argv)
        except SystemExit as e:  # --help / --version
            return int(e.code or 0)
        if a.command is None:
            parser.print_help()
            return 2
        return _COMMANDS[a.command](a)
    except UserError as e:
        msg = " ".join(str(e).split("\n"))
        print(f"pyrnn{' ' + cmd if cmd else ''}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyrnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `pyrnn sample m | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())
