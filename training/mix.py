"""Concatenate training splits into one (a cycle's pictures from several data.py runs).

  python3 mix.py OUT.npz IN.npz[:first|:wide] ...
IN:first keeps that split's first-world pictures only (shapes on the 3x3 grid), IN:wide its
wider-world ones; the same IN twice counts its pictures twice (train.py samples pictures
uniformly, so that is how a kind is asked for more often).
"""

import sys

import numpy as np

import data as D


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    pix, meta = [], []
    for arg in sys.argv[2:]:
        path, _, kind = arg.partition(":")
        if kind not in ("", "first", "wide"):
            sys.exit(f"{arg}: the part after ':' must be 'first' or 'wide'")
        try:
            p, m = D.load_split(path)
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"{path}: not a split written by data.py ({e})")
        keep = [i for i, x in enumerate(m)
                if not kind or (kind == "wide") == ("d" in x["objects"][0])]
        pix.append(p[keep])
        meta += [m[i] for i in keep]
        print(f"{arg}: {len(keep)} pictures", file=sys.stderr)
    D.save_split([dict(m, pixels=p) for p, m in zip(np.concatenate(pix), meta)], sys.argv[1])
    print(f"{sys.argv[1]}: {len(meta)} pictures", file=sys.stderr)


if __name__ == "__main__":
    main()
