#!/usr/bin/env python3
"""The santander model trained by ml-api's own training API, and served at `/predict`.

    .tools/venv-model/bin/python models/santander/through_api.py --base http://127.0.0.1:5001

(`make santander-api` starts a server with the embedded registry and runs this against it.)

1. Writes a CSV in the Kaggle `train_ver2.csv` layout (48 columns, monthly snapshots, with the
   file's quirks: padded numbers, `NA`, `indrel_1mes` as `1.0`/`P`) from the synthetic generator
   in train.py: each synthetic customer has two consecutive monthly rows, the second adding one
   product.
2. Derives the training rows from it with train.py's Kaggle reader (`load_real`: one row per
   product added from one month to the next, the customer's earlier record as features) --
   the step that turns monthly snapshots into "what was added next", which is not a training
   API's job -- and splits them 80/20 (seeded).
3. Uploads the 80% as a data set (`POST /datasets`, CSV, the string features named in
   `?categorical=`), trains `santander` from it (`POST /models {"dataset_id", "target":
   "product", ...}`), waits for `ready`: `santander:latest` moves to the new version, so the
   default `POST /predict` serves it. Sends the Flask prediction API's example record to
   `/predict`.
4. Scores the held-out 20% with the API-trained model (its ONNX graph, `GET /models/{id}/onnx`,
   in ONNX Runtime: the served contract refuses categories unseen in training) and
   with the skl2onnx pipeline of train.py fitted on the same 80%; prints log loss and top-1
   accuracy of both.

renta: the pipeline imputes missing incomes with the median inside the model; ml-api does not
impute numbers, so the training CSV carries renta filled with the training median (the model
then needs renta in requests).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train as santander  # noqa: E402


def write_kaggle_csv(X: pd.DataFrame, y: np.ndarray, path: Path, seed: int) -> None:
    """Two monthly rows per customer in train_ver2.csv's layout; the second adds product y."""
    rng = np.random.default_rng(seed)
    n = len(X)
    months = ["2016-04-28", "2016-05-28"]
    columns = santander.CSV_COLUMNS
    frames = []
    for m, month in enumerate(months):
        out = pd.DataFrame(index=range(n))
        out["fecha_dato"] = month
        out["ncodpers"] = np.arange(n) + 15_000
        for c in santander.STRING_FEATURES:
            out[c] = X[c].to_numpy()
        age = X["age"].astype(int).astype(str)
        out["age"] = np.where(rng.random(n) < 0.5, age.str.rjust(3), age)
        out["fecha_alta"] = "2012-08-10"
        out["ind_nuevo"] = X["ind_nuevo"].to_numpy()
        antig = X["antiguedad"].astype(int) + m
        out["antiguedad"] = antig.astype(str).str.rjust(6)
        out["indrel"] = X["indrel"].to_numpy()
        out["ult_fec_cli_1t"] = ""
        i1 = X["indrel_1mes"].astype(int).astype(str)
        out["indrel_1mes"] = np.where(rng.random(n) < 0.3, i1 + ".0", i1)
        out["tipodom"] = X["tipodom"].to_numpy()
        out["cod_prov"] = X["cod_prov"].to_numpy()
        out["ind_actividad_cliente"] = X["ind_actividad_cliente"].to_numpy()
        renta = X["renta"].map(lambda v: "         NA" if pd.isna(v) else f"{v:.2f}")
        out["renta"] = renta.to_numpy()
        owned = np.zeros((n, len(santander.ALL_PRODUCTS)), dtype=int)
        if m == 1:
            for i, k in enumerate(y):
                owned[i, santander.ALL_PRODUCTS.index(santander.LABELS[k])] = 1
        for j, p in enumerate(santander.ALL_PRODUCTS):
            out[p] = owned[:, j]
        frames.append(out[columns])
    pd.concat(frames).to_csv(path, index=False)


class Api:
    def __init__(self, base: str, admin_key: str | None):
        self.base = base.rstrip("/")
        self.headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}

    def call(self, method: str, path: str, body=None, content_type="application/json"):
        data = json.dumps(body).encode() if content_type == "application/json" and body is not None else body
        headers = dict(self.headers)
        if body is not None:
            headers["content-type"] = content_type
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=600) as response:
                return json.loads(response.read() or b"null"), dict(response.headers)
        except urllib.error.HTTPError as error:
            raise SystemExit(f"{method} {path}: {error.code} {error.read().decode()}") from None


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="http://127.0.0.1:5001")
    parser.add_argument("--admin-key", default=None)
    parser.add_argument("--rows", type=int, default=santander.N_ROWS)
    parser.add_argument("--seed", type=int, default=santander.SEED)
    parser.add_argument("--work-dir", default=".run/santander-api")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)

    X0, y0 = santander.make_synthetic(args.rows, args.seed)
    kaggle = work / "train_ver2.csv"
    write_kaggle_csv(X0, y0, kaggle, args.seed)
    X, y = santander.load_real(str(kaggle))
    print(f"{kaggle}: {kaggle.stat().st_size / 1e6:.1f} MB in the Kaggle layout -> {len(X)} training rows")
    order = np.random.default_rng(args.seed).permutation(len(X))
    cut = int(len(X) * 0.8)
    train_idx, test_idx = np.sort(order[:cut]), np.sort(order[cut:])
    X_train, y_train = X.iloc[train_idx].reset_index(drop=True), y[train_idx]
    X_test, y_test = X.iloc[test_idx].reset_index(drop=True), y[test_idx]

    median = float(X_train["renta"].median())
    rows = X_train.copy()
    rows["renta"] = rows["renta"].fillna(median)
    rows["product"] = [santander.LABELS[k] for k in y_train]
    body = rows.to_csv(index=False).encode()

    api = Api(args.base, args.admin_key)
    started = time.perf_counter()
    categorical = ",".join(santander.STRING_FEATURES)
    dataset, _ = api.call("POST", f"/datasets?name=santander&categorical={categorical}", body, "text/csv")
    created, _ = api.call("POST", "/models", {
        "dataset_id": dataset["dataset_id"], "target": "product", "name": "santander",
        "standardize": True, "C": 1.0, "max_iter": 1000, "tol": 1e-4,
    })
    while True:
        record, _ = api.call("GET", f"/models/{created['model_id']}")
        if record["status"] in ("ready", "failed"):
            break
        time.sleep(0.2)
    if record["status"] != "ready":
        raise SystemExit(f"training failed: {record.get('error')}")
    seconds = time.perf_counter() - started
    print(f"ml-api: data set {dataset['dataset_id']} ({dataset['rows']} rows), model santander "
          f"v{record['version']} ready in {seconds:.1f} s")

    answer, headers = api.call("POST", "/predict", santander.SEED_RECORD)
    version = headers.get("x-model-version") or headers.get("X-Model-Version")
    print(f"POST /predict with the Flask API's example record -> {len(answer['predictions'][0])} "
          f"probabilities, served by santander version {version}")
    assert abs(sum(answer["predictions"][0]) - 1) < 1e-4

    # Held-out rows: the model's contract refuses categories never seen in training at
    # /predict, so the whole 20% is scored by the same ONNX graph in ONNX Runtime (an unseen
    # category one-hot encodes as zeros, as scikit-learn's handle_unknown="ignore").
    import onnxruntime as ort
    req = urllib.request.Request(f"{api.base}/models/{created['model_id']}/onnx", headers=api.headers)
    with urllib.request.urlopen(req) as response:
        graph = response.read()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    records = X_test.copy()
    records["renta"] = records["renta"].fillna(median)
    feeds = {}
    for spec in session.get_inputs():
        column = records[spec.name]
        if spec.type == "tensor(string)":
            feeds[spec.name] = column.astype(str).to_numpy(dtype=object).reshape(-1, 1)
        else:
            feeds[spec.name] = column.to_numpy(dtype=np.float32).reshape(-1, 1)
    served = session.run(["probabilities"], feeds)[0]
    labels = record["labels"]
    served = served[:, [labels.index(l) for l in santander.LABELS]]

    pipe = santander.build_pipeline()
    pipe.fit(santander.prepare(X_train), y_train)
    sk = pipe.predict_proba(santander.prepare(X_test))
    table = [
        "| model | trained by | held-out rows | log loss | top-1 accuracy |",
        "|---|---|---|---|---|",
        f"| ml-api (`POST /datasets` + `POST /models`) | ml-api, standardize, C=1, lbfgs-equivalent | {len(y_test)} "
        f"| {log_loss(served, y_test):.4f} | {float((served.argmax(1) == y_test).mean()):.4f} |",
        f"| train.py pipeline (skl2onnx's input) | scikit-learn 1.9.1, OneHot + StandardScaler + median imputer, lbfgs | {len(y_test)} "
        f"| {log_loss(sk, y_test):.4f} | {float((sk.argmax(1) == y_test).mean()):.4f} |",
    ]
    print("\n".join(table))
    (work / "comparison.md").write_text("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
