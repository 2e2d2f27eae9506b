"""Many-to-many (T_x = T_y): mark which tokens belong to a name.

A small grammar: a run of ambiguous words is a name when a title comes before it
("dr x y") or "said" after it ("x y said"); the same words elsewhere are ordinary.
A bidirectional LSTM sees both sides; the metric is token accuracy on real
(unpadded) tokens.

Run:  python examples/tagging.py [--steps 150]
"""
import argparse
import time

import numpy as np

from pyrnn import clip, losses, optim, tasks
from pyrnn.models import SequenceTagger


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    model = SequenceTagger(tasks.TAG_VOCAB, 2, embed_size=16, hidden_size=32, seed=args.seed)
    opt = optim.Adam(model, lr=0.01)
    ids_v, len_v, tags_v = tasks.name_tagging(1000, rng=args.seed + 1)
    mask_v = np.arange(ids_v.shape[0])[:, None] < len_v[None]
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        ids, lengths, tags = tasks.name_tagging(32, rng=rng)
        mask = np.arange(ids.shape[0])[:, None] < lengths[None]
        opt.zero_grad()
        logits, backward = model.forward_train(ids, lengths)
        loss, grad = losses.cross_entropy(logits, tags, mask=mask)
        backward(grad)
        clip.clip_grad_norm(model, 1.0)
        opt.step()
        if step % 50 == 0:
            acc = (model.predict(ids_v, len_v) == tags_v)[mask_v].mean()
            print(f"step {step:4d}  loss {loss:.4f}  token acc {acc:.4f}  "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    acc = (model.predict(ids_v, len_v) == tags_v)[mask_v].mean()
    print(f"final token accuracy: {acc:.4f}  "
          f"[all-'not a name' baseline {(tags_v[mask_v] == 0).mean():.4f}]")


if __name__ == "__main__":
    main()
