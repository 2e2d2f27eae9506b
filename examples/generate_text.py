"""One-to-many: a tiny character language model, trained briefly, then sampled.

A 1-layer LSTM LM learns a small built-in text with truncated BPTT (the state is
carried from one window to the next, without gradient), then streams samples from
a prime string with temperature / top-k. Prints the final bits per character.

Run:  python examples/generate_text.py [--steps 300] [--temperature 0.7]
"""
import argparse
import time

import numpy as np

from pyrnn import clip, losses, optim
from pyrnn.models import LanguageModel
from pyrnn.vocab import Vocab

TEXT = (
    "the quick brown fox jumps over the lazy dog. "
    "a small recurrent network reads one character at a time and keeps a state. "
    "the state carries what it has seen so far, and the network predicts the next "
    "character from it. trained for a short while, it learns common words, spaces "
    "and full stops; trained longer, it learns more of the text. "
) * 4


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--bptt", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--prime", default="the ")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    vocab = Vocab.build([TEXT], level="char")
    data = np.asarray(vocab.encode(TEXT), np.int64)
    # B parallel streams: column b continues where it left off at every window
    n = (len(data) - 1) // args.batch
    xs = data[:n * args.batch].reshape(args.batch, n).T
    ys = data[1:n * args.batch + 1].reshape(args.batch, n).T

    model = LanguageModel(len(vocab), embed_size=32, hidden_size=96, num_layers=1,
                          seed=args.seed)
    opt = optim.Adam(model, lr=0.005)
    state, pos, t0 = None, 0, time.perf_counter()
    for step in range(1, args.steps + 1):
        if pos + args.bptt > n:
            state, pos = None, 0  # wrap around: start the streams afresh
        x, y = xs[pos:pos + args.bptt], ys[pos:pos + args.bptt]
        pos += args.bptt
        opt.zero_grad()
        logits, state, backward = model.forward_train(x, state)
        loss, grad = losses.cross_entropy(logits, y)
        backward(grad)
        clip.clip_grad_norm(model, 1.0)
        opt.step()
        state = model.detach_state(state)
        if step % 100 == 0:
            print(f"step {step:4d}  loss {loss:.3f}  {time.perf_counter() - t0:.1f} s",
                  flush=True)

    logits, _ = model(xs)
    bpc = losses.cross_entropy(logits, ys)[0] / np.log(2)
    print("sample: " + args.prime, end="", flush=True)
    for tok in model.generate(vocab.encode(args.prime), 120, temperature=args.temperature,
                              top_k=10, seed=args.seed):
        print(vocab.id_to_token(tok), end="", flush=True)  # streamed as it is sampled
    print()
    print(f"final bits per character (training text): {bpc:.3f}")


if __name__ == "__main__":
    main()
