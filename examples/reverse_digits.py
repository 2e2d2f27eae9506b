"""Encoder-decoder (T_x != T_y): reverse a string of digits.

An LSTM encoder reads "40917", its final state starts an LSTM decoder that is
trained with teacher forcing and evaluated with greedy decoding; the metric is the
fraction of strings reversed exactly.

Run:  python examples/reverse_digits.py [--steps 400]
"""
import argparse
import time

import numpy as np

from pyrnn import clip, losses, optim, tasks
from pyrnn.models import Seq2Seq


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--max-len", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    model = Seq2Seq(tasks.DIGIT_VOCAB, tasks.DIGIT_VOCAB, embed_size=16, hidden_size=96,
                    seed=args.seed)
    opt = optim.Adam(model, lr=0.01)
    val = tasks.digit_reversal(1000, 3, args.max_len, rng=args.seed + 1)

    def exact_match():
        out = model.greedy_decode(val["src"], val["src_lengths"], args.max_len + 1,
                                  tasks.DIGIT_BOS, tasks.DIGIT_EOS, pad_id=tasks.DIGIT_PAD)
        T = val["tgt_out"].shape[0]
        return np.all((out[:T] == val["tgt_out"]) | ~val["tgt_mask"], axis=0).mean(), out

    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        d = tasks.digit_reversal(64, 3, args.max_len, rng=rng)
        opt.zero_grad()
        logits, backward = model.forward_train(d["src"], d["src_lengths"], d["tgt_in"])
        loss, grad = losses.cross_entropy(logits, d["tgt_out"], mask=d["tgt_mask"])
        backward(grad)
        clip.clip_grad_norm(model, 1.0)
        opt.step()
        if step % 100 == 0:
            acc, _ = exact_match()
            print(f"step {step:4d}  loss {loss:.4f}  exact {acc:.3f}  "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
    acc, out = exact_match()
    for b in range(3):
        src = tasks.digits_to_str(val["src"][:val["src_lengths"][b], b])
        print(f"  {src} -> {tasks.digits_to_str(out[:, b])}")
    print(f"final exact-match accuracy: {acc:.3f}")


if __name__ == "__main__":
    main()
