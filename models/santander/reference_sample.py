"""Writes a reference sample of the bundled model's TRAINING rows as request records.

The sample is the training split train.py fits on (same synthetic generator, seed and split),
subsampled to --rows, with each row written the way `POST /predict` takes it (renta's NaN as
null). `ml-api contract --model models/santander --sample <file>` profiles it into the card's
feature contract (scripts/santander-contract.sh does both and writes card.json).

    python models/santander/reference_sample.py --rows 20000 --out /tmp/sample.json
"""
import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from sklearn.model_selection import train_test_split
    X, y = train.make_synthetic(train.N_ROWS, train.SEED)
    X = train.prepare(X)
    strat = y if min(__import__("numpy").bincount(y)) >= 2 else None
    Xtr, _, _, _ = train_test_split(X, y, test_size=0.2, random_state=train.SEED, stratify=strat)
    sample = Xtr.sample(n=min(args.rows, len(Xtr)), random_state=train.SEED)
    records = []
    for row in sample.to_dict(orient="records"):
        record = {}
        for field in train.FEATURES:
            v = row[field]
            if field in train.STRING_FEATURES:
                record[field] = str(v)
            elif field in train.INT_FEATURES:
                record[field] = int(v)
            else:
                record[field] = None if v is None or math.isnan(v) else float(v)
        records.append(record)
    Path(args.out).write_text(json.dumps(records, separators=(",", ":")))
    print(f"reference_sample: {len(records)} training rows -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
