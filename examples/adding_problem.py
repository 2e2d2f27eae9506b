"""Many-to-one regression: the adding problem (Hochreiter & Schmidhuber, 1997).

Each step carries a random value and a marker; the target is the sum of the two
marked values, one in each half of a sequence of T steps. A constant guess scores
an MSE of about 0.167; an LSTM that remembers the marked values scores < 0.01.

Run:  python examples/adding_problem.py [--T 50] [--steps 1500]
"""
import argparse
import time

import numpy as np

from pyrnn import clip, losses, optim, tasks
from pyrnn.models import SequenceClassifier


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=50, help="sequence length")
    ap.add_argument("--steps", type=int, default=1500, help="maximum training steps")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    # num_classes=1 + mse_loss on the output: a regressor on the final state
    model = SequenceClassifier(input_size=2, num_classes=1, hidden_size=args.hidden,
                               seed=args.seed)
    opt = optim.Adam(model, lr=0.01)
    x_val, y_val = tasks.adding_problem(1000, args.T, rng=args.seed + 1)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = tasks.adding_problem(64, args.T, rng=rng)
        opt.zero_grad()
        pred, backward = model.forward_train(x)
        loss, grad = losses.mse_loss(pred, y)
        backward(grad)
        clip.clip_grad_norm(model, 1.0)
        opt.step()
        if step % 100 == 0:
            val = losses.mse_loss(model(x_val), y_val)[0]
            print(f"step {step:5d}  train mse {loss:.4f}  val mse {val:.4f}  "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            if val < 0.005:
                break
    val = losses.mse_loss(model(x_val), y_val)[0]
    print(f"final validation MSE (T={args.T}): {val:.4f}  [constant guess ~0.167]")


if __name__ == "__main__":
    main()
