#!/usr/bin/env python
"""Write the demo data set of embedding conditioning: the bundled digits with one vector per image
(its label through a fixed random projection, plus noise; ganx.data.demo.digit_embeddings).

    python scripts/make_digit_embeddings.py digits_emb.npz [--dim 32] [--noise 0.1] [--seed 0]
    ganx train --data digits_emb.npz                       # a G and D conditioned on the vectors
    python -c "import numpy as np; e = np.load('digits_emb.npz')['embeddings']; np.save('v.npy', e[:10])"
    ganx sample --checkpoint runs/<run> --embedding v.npy --n 8 --out grid.png
"""
from __future__ import annotations

import argparse
import sys

from ganx.data.demo import save_digit_embeddings


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the .npz to write (images, labels, embeddings)")
    p.add_argument("--dim", type=int, default=32, help="values per embedding")
    p.add_argument("--noise", type=float, default=0.1, help="standard deviation of the noise added to each vector")
    p.add_argument("--seed", type=int, default=0, help="seed of the projection and the noise")
    args = p.parse_args(argv)
    try:
        path = save_digit_embeddings(args.out, args.dim, args.noise, args.seed)
    except ValueError as e:
        print(f"make_digit_embeddings: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}: 1797 digits, embeddings of {args.dim} values (noise {args.noise}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
