#!/usr/bin/env bash
# Writes the bundled model's feature contract into models/santander/card.json: a sample of
# its training rows (models/santander/reference_sample.py: the same synthetic generator, seed
# and split as train.py) profiled by `ml-api contract` (quantile bins, category frequencies,
# ranges, predicted-label shares). Keeps the card's existing contract policy, if any.
# Run by `make model` after train.py; needs `make ort` and a built binary (it builds one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/lib/libonnxruntime.so.1.31.1}"
PY="$(scripts/python-venv.sh | tail -n 1)"
cargo build --release --locked >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" models/santander/reference_sample.py --rows "${ROWS:-20000}" --out "$work/sample.json"
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ml-api" --log-format pretty contract --model models/santander \
  --sample "$work/sample.json" >"$work/contract.json"
python3 - "$work/contract.json" models/santander/card.json <<'PY'
import json, sys
contract_path, card_path = sys.argv[1:]
contract = json.load(open(contract_path))
card = json.load(open(card_path))
if "contract" in card and "policy" in card["contract"]:
    contract["policy"] = card["contract"]["policy"]
card["contract"] = contract
with open(card_path, "w", encoding="utf-8") as f:
    f.write(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
print(f"santander-contract: {contract['samples']} rows profiled into {card_path}", file=sys.stderr)
PY
