#!/usr/bin/env python3
"""`make bench-train`: ml-api's training from a data set against pandas + scikit-learn.

Run by scripts/bench-train.sh (which builds the release binary and the Python venv):

    .tools/venv-model/bin/python scripts/bench_train.py --bin target/release/ml-api

For each case it writes a synthetic CSV (fixed seed), then, in the same run, in paired rounds
(`--rounds`, default 5; the two sides take turns to go first, and each verdict is the median
of the per-round ratios, because the host's speed drifts by tens of percent within a minute):
- ml-api end to end: a fresh `ml-api serve` (embedded registry, shipped defaults), upload
  start (`POST /datasets`) -> `POST /models {"dataset_id"}` -> `ready` (the model record is
  polled every 5 ms); its fit step is the `fitting` phase of
  `ml_api_training_phase_duration_seconds`; the server's peak resident memory is VmHWM from
  /proc; the record's `metrics.phase_seconds` and the upload's own time are kept in
  results.json;
- pandas.read_csv + scikit-learn LogisticRegression(solver="lbfgs") on one thread (threadpoolctl
  and *_NUM_THREADS=1): read time, fit time; same C, tol and max_iter as ml-api;
- the largest |p_ml-api - p_sklearn| over 2,000 rows scored through `/models/{name}/predict`.
Then a 10,000,000 x 20 CSV generated on the fly (streamed into the upload, never on disk) is
trained by ml-api alone: time and peak memory.

Prints a Markdown table (and writes it to .run/bench-train/table.md and results.json).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".run" / "bench-train"
C, TOL, MAX_ITER = 1.0, 1e-6, 1000


def synthetic(rows: int, features: int, classes: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features))
    w = rng.standard_normal((features, classes)) / np.sqrt(features) * 2.0
    logits = x @ w + rng.gumbel(size=(rows, classes))
    y = logits.argmax(axis=1)
    frame = pd.DataFrame(x.round(6), columns=[f"x{j}" for j in range(features)])
    frame["y"] = y
    return frame


def chunks_on_the_fly(rows: int, features: int, seed: int, block: int = 200_000):
    """CSV bytes of a binary problem, generated block by block."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(features) / np.sqrt(features) * 2.0
    yield (",".join(f"x{j}" for j in range(features)) + ",y\n").encode()
    done = 0
    while done < rows:
        n = min(block, rows - done)
        x = rng.standard_normal((n, features)).round(5)
        y = (x @ w + rng.logistic(size=n) > 0).astype(int)
        frame = pd.DataFrame(x)
        frame["y"] = y
        yield frame.to_csv(header=False, index=False).encode()
        done += n


class Server:
    def __init__(self, binary: str, store: Path):
        self.process = subprocess.Popen(
            [binary, "--log-format", "json", "serve", "--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
             "--rate-limit", "false", "--dataset-store", str(store)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                log = json.loads(line)
            except ValueError:
                continue
            if log.get("message") == "serving":
                self.base = f"http://{log['addr']}"
                break
        else:
            raise SystemExit("ml-api did not start")
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def request(self, method: str, path: str, body=None, headers=None):
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            headers["content-type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=3600) as response:
            return json.loads(response.read() or b"null")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.base + "/metrics") as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    if line.startswith(name):
                        return float(line.rsplit(" ", 1)[1])
        return float("nan")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def train(server: Server, body, name: str, gen=None):
    started = time.perf_counter()
    headers = {"content-type": "text/csv"}
    if gen is not None:
        body = gen  # an iterable: urllib sends it with chunked transfer encoding
    dataset = server.request("POST", "/datasets", body, headers)
    uploaded = time.perf_counter() - started
    created = server.request("POST", "/models", {
        "dataset_id": dataset["dataset_id"], "target": "y", "name": name,
        "C": C, "tol": TOL, "max_iter": MAX_ITER,
    })
    # Polled every 5 ms over one keep-alive connection: the poll adds at most 5 ms (it was
    # 50 ms, which added 25 ms on average to the end-to-end time) and little CPU.
    poll = http.client.HTTPConnection(server.base.removeprefix("http://"), timeout=3600)
    while True:
        poll.request("GET", f"/models/{created['model_id']}")
        record = json.loads(poll.getresponse().read())
        if record["status"] in ("ready", "failed"):
            break
        time.sleep(0.005)
    total = time.perf_counter() - started
    poll.close()
    if record["status"] != "ready":
        raise SystemExit(f"training failed: {record.get('error')}")
    fitting = server.metric('ml_api_training_phase_duration_seconds_sum{phase="fitting"}')
    reading = server.metric('ml_api_training_phase_duration_seconds_sum{phase="reading"}')
    return total, fitting, reading, record, uploaded


def ml_api_round(binary: str, path: Path, store: Path, sample: pd.DataFrame | None) -> dict:
    """One ml-api job on a fresh server; scores `sample` through the trained model if given."""
    server = Server(binary, store)
    try:
        total, fit, read, record, uploaded = train(server, path.read_bytes(), "bench")
        peak = server.peak_rss_mib()
        got = []
        if sample is not None:
            for start in range(0, len(sample), 500):
                part = sample.iloc[start:start + 500].to_dict(orient="records")
                got.extend(server.request("POST", "/models/bench/predict", part)["predictions"])
    finally:
        server.stop()
    return {"total": total, "fit": fit, "read": read, "record": record, "uploaded": uploaded,
            "peak": peak, "got": np.array(got)}


def sklearn_round(path: Path) -> dict:
    """pandas.read_csv + LogisticRegression(lbfgs) on one thread."""
    with threadpool_limits(limits=1):
        t0 = time.perf_counter()
        data = pd.read_csv(path)
        t1 = time.perf_counter()
        model = LogisticRegression(C=C, tol=TOL, max_iter=MAX_ITER, solver="lbfgs")
        model.fit(data.drop(columns="y").to_numpy(), data["y"].to_numpy())
        t2 = time.perf_counter()
    return {"read": t1 - t0, "fit": t2 - t1, "total": t2 - t0, "model": model}


def case(binary: str, rows: int, features: int, classes: int, seed: int, rounds: int) -> dict:
    """`rounds` paired rounds, the two sides taking turns to go first (the host's speed drifts
    by tens of percent within a minute; a ratio of two runs side by side drifts much less).
    The reported times are medians; the verdicts take the median of the per-round ratios."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"train_{rows}x{features}.csv"
    frame = synthetic(rows, features, classes, seed)
    frame.to_csv(path, index=False)
    size_mb = path.stat().st_size / 1e6
    sample = frame.iloc[:2000, :features]
    store = OUT / f"store-{rows}x{features}"

    ours, theirs = [], []
    for i in range(rounds):
        for side in (("ml-api", "sklearn") if i % 2 == 0 else ("sklearn", "ml-api")):
            if side == "ml-api":
                ours.append(ml_api_round(binary, path, store, sample if not ours else None))
            else:
                theirs.append(sklearn_round(path))
    first, model = ours[0], theirs[0]["model"]
    want = model.predict_proba(sample.to_numpy())
    median = lambda runs, key: float(np.median([r[key] for r in runs]))  # noqa: E731
    ratio = lambda key: float(np.median([a[key] / b[key] for a, b in zip(ours, theirs)]))  # noqa: E731
    return {
        "case": f"{rows:,} x {features} ({'binary' if classes == 2 else f'{classes} classes'})",
        "csv_mb": round(size_mb, 1),
        "rounds": rounds,
        "ml_api_end_to_end_s": round(median(ours, "total"), 3),
        "ml_api_read_s": round(median(ours, "read"), 3),
        "ml_api_fit_s": round(median(ours, "fit"), 3),
        "ml_api_iterations": first["record"]["metrics"].get("iterations"),
        "ml_api_peak_rss_mib": round(max(r["peak"] for r in ours), 1),
        "ml_api_upload_s": round(median(ours, "uploaded"), 3),
        "ml_api_phase_seconds": first["record"]["metrics"].get("phase_seconds"),
        "pandas_read_s": round(median(theirs, "read"), 3),
        "sklearn_fit_s": round(median(theirs, "fit"), 3),
        "sklearn_end_to_end_s": round(median(theirs, "total"), 3),
        "end_to_end_ratio": round(ratio("total"), 3),
        "fit_ratio": round(ratio("fit"), 3),
        "rounds_end_to_end_s": [[round(a["total"], 3), round(b["total"], 3)] for a, b in zip(ours, theirs)],
        "sklearn_iterations": int(np.max(model.n_iter_)),
        "max_abs_p_diff": float(np.abs(first["got"] - want).max()),
    }


def huge(binary: str, rows: int, features: int) -> dict:
    store = OUT / "store-huge"
    server = Server(binary, store)
    try:
        total, fit, read, record, uploaded = train(
            server, None, "huge", gen=chunks_on_the_fly(rows, features, 7))
        peak = server.peak_rss_mib()
    finally:
        server.stop()
    return {
        "case": f"{rows:,} x {features} (binary, generated on the fly)",
        "ml_api_end_to_end_s": round(total, 1),
        "ml_api_read_s": round(read, 1),
        "ml_api_fit_s": round(fit, 1),
        "ml_api_iterations": record["metrics"].get("iterations"),
        "ml_api_peak_rss_mib": round(peak, 1),
        "ml_api_upload_s": round(uploaded, 1),
        "ml_api_phase_seconds": record["metrics"].get("phase_seconds"),
        "design_matrix_mib": round(rows * features * 8 / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default=str(ROOT / "target/release/ml-api"))
    parser.add_argument("--skip-huge", action="store_true")
    parser.add_argument("--huge-rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="paired rounds of each case (ml-api and pandas + sklearn in turn)")
    args = parser.parse_args()
    results = [
        case(args.bin, 100_000, 50, 2, 1, args.rounds),
        case(args.bin, 1_000_000, 10, 5, 2, args.rounds),
    ]
    lines = [
        "| case | CSV MB | ml-api end to end s (read / fit) | pandas + sklearn s (read / fit) | end to end ratio (every round, ml-api / pandas + sklearn s) | fit ratio | iterations ml-api / sklearn | max abs p diff | ml-api peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        each = ", ".join(f"{a} / {b}" for a, b in r["rounds_end_to_end_s"])
        lines.append(
            f"| {r['case']} | {r['csv_mb']} | {r['ml_api_end_to_end_s']} ({r['ml_api_read_s']} / "
            f"{r['ml_api_fit_s']}) | {r['sklearn_end_to_end_s']} ({r['pandas_read_s']} / "
            f"{r['sklearn_fit_s']}) | {r['end_to_end_ratio']}× ({each}) | {r['fit_ratio']}× | "
            f"{r['ml_api_iterations']} / {r['sklearn_iterations']} | "
            f"{r['max_abs_p_diff']:.1e} | {r['ml_api_peak_rss_mib']} |")
    if not args.skip_huge:
        h = huge(args.bin, args.huge_rows, 20)
        results.append(h)
        lines.append(
            f"| {h['case']} | (streamed) | {h['ml_api_end_to_end_s']} ({h['ml_api_read_s']} / "
            f"{h['ml_api_fit_s']}) | - | - | - | {h['ml_api_iterations']} / - | - | "
            f"{h['ml_api_peak_rss_mib']} (design matrix {h['design_matrix_mib']}) |")
    table = "\n".join(lines)
    print(table)
    (OUT / "table.md").write_text(table + "\n")
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    checks = []
    for r in results[:2]:
        checks.append((f"{r['case']}: end to end no slower than pandas + sklearn "
                       f"(median of {r['rounds']} paired ratios: {r['end_to_end_ratio']}×)",
                       r["end_to_end_ratio"] <= 1.0))
        checks.append((f"{r['case']}: fit no slower than sklearn's fit ({r['fit_ratio']}×)",
                       r["fit_ratio"] <= 1.0))
        checks.append((f"{r['case']}: probabilities within 1e-4", r["max_abs_p_diff"] <= 1e-4))
    checks.append(("1,000,000 x 10: peak RSS <= 512 MiB", results[1]["ml_api_peak_rss_mib"] <= 512))
    for text, ok in checks:
        print(("PASS " if ok else "MISS ") + text)


if __name__ == "__main__":
    sys.exit(main())
