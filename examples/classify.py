"""Many-to-one classification: which marker token appears first?

Sequences of 5-30 noise tokens hold 1-3 of four marker tokens; the class is the
first marker's. The answer is often far from the end, so the final state (or the
mean-pooled outputs, --pooling mean) must carry it. Variable lengths via `lengths`.

Run:  python examples/classify.py [--steps 300] [--pooling last|mean]
"""
import argparse
import time

import numpy as np

from pyrnn import clip, losses, optim, tasks
from pyrnn.models import SequenceClassifier


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--pooling", choices=["last", "mean"], default="last")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    model = SequenceClassifier(20, 4, embed_size=16, hidden_size=32, pooling=args.pooling,
                               seed=args.seed)
    opt = optim.Adam(model, lr=0.01)
    ids_v, len_v, y_v = tasks.first_marker(1000, rng=args.seed + 1)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        ids, lengths, y = tasks.first_marker(32, rng=rng)
        opt.zero_grad()
        logits, backward = model.forward_train(ids, lengths)
        loss, grad = losses.cross_entropy(logits, y)
        backward(grad)
        clip.clip_grad_norm(model, 1.0)
        opt.step()
        if step % 50 == 0:
            acc = (model.predict(ids_v, len_v) == y_v).mean()
            print(f"step {step:4d}  loss {loss:.4f}  acc {acc:.4f}  "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    print(f"final accuracy: {(model.predict(ids_v, len_v) == y_v).mean():.4f}  [chance 0.25]")


if __name__ == "__main__":
    main()
