"""Writes insurance.csv: a made-up table shaped like real ones (text categories, a few gaps, odd column names).

    python examples/data/make_insurance.py   # writes examples/data/insurance.csv and new_policies.csv (seeded)

``new_policies.csv`` holds a few more policies with the same columns but no ``charges``: rows to predict with a
model trained on insurance.csv (``lit-regression predict --ckpt_path last --data.predict_path ...``).

Columns: ``policy id`` (unique text: ignored, too many values), ``age``, ``sex``, ``BMI (kg/m2)`` (a few empty
cells), ``children``, ``smoker`` (yes/no), ``region`` (four regions, a few empty cells), ``charges`` (the target,
a linear function of the rest plus noise, so a linear model with one-hot regions can explain most of it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

REGIONS = ["northeast", "northwest", "southeast", "southwest"]


def make(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 65, size=rows)
    sex = rng.choice(["female", "male"], size=rows)
    bmi = np.round(rng.normal(30.0, 6.0, size=rows), 2)
    children = rng.integers(0, 5, size=rows)
    smoker = rng.choice(["yes", "no"], size=rows, p=[0.2, 0.8])
    region = rng.choice(REGIONS, size=rows)
    charges = (
        250.0 * age + 330.0 * (bmi - 30) + 480.0 * children + 23_800.0 * (smoker == "yes")
        + np.select([region == r for r in REGIONS], [0.0, -350.0, -1000.0, -900.0]) - 130.0 * (sex == "male")
        - 2000.0 + rng.normal(0.0, 4000.0, size=rows)
    )
    frame = pd.DataFrame({
        "policy id": [f"P-{i:05d}" for i in rng.permutation(rows)],
        "age": age, "sex": sex, "BMI (kg/m2)": bmi, "children": children, "smoker": smoker, "region": region,
        "charges": np.round(charges, 2),
    })
    gaps = rng.choice(rows, size=12, replace=False)
    frame.loc[gaps[:7], "BMI (kg/m2)"] = np.nan
    frame.loc[gaps[7:], "region"] = None
    return frame


def new_policies(rows: int = 5, seed: int = 1) -> pd.DataFrame:
    """Policies to predict: drawn as in :func:`make` from another seed, without gaps and without the target."""
    frame = make(max(rows, 20), seed).drop(columns="charges").dropna().head(rows).reset_index(drop=True)
    frame["policy id"] = [f"N-{i:05d}" for i in range(1, len(frame) + 1)]
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("insurance.csv"))
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--new-out", type=Path, default=Path(__file__).with_name("new_policies.csv"),
                        help="where to write the policies to predict (no charges column)")
    args = parser.parse_args()
    make(args.rows).to_csv(args.out, index=False)
    print(f"wrote {args.out}")
    new_policies().to_csv(args.new_out, index=False)
    print(f"wrote {args.new_out}")


if __name__ == "__main__":
    main()
