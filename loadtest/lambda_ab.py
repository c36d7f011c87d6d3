#!/usr/bin/env python3
"""Helpers of scripts/lambda-ab.sh (the Kubernetes-versus-Lambda A/B test). Standard library only.

  lambda_ab.py coldstart serve BIN N CGROUP|-
      N cold starts of `ml-api serve` (bundled model, embedded registry) on a free port: the time
      from the exec to the first 200 answer of POST /predict (a connection is tried every ms).
  lambda_ab.py coldstart lambda BIN N CGROUP|- CARGO_LAMBDA
      N cold starts of the Lambda function: a fresh emulator (`cargo lambda watch
      --only-lambda-apis`), the /predict request queued at its function URL, then the exec of
      the function; the time from the exec to the answer.
  CGROUP: a cgroup directory the process joins before its exec (its CPU quota stands for
  Lambda's CPU share), or - for none. Prints one JSON object: {"ms": [...]}.

  lambda_ab.py report OUT_DIR
      Reads OUT_DIR/measurements.json (written by lambda-ab.sh) and the k6 summaries it names,
      prints the Markdown table for docs/k8s-vs-lambda.md.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = open(os.path.join(ROOT, "tests/fixtures/seed_request.json"), "rb").read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_cgroup(cgroup):
    if cgroup == "-":
        return None

    def join():
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    return join


def post_predict(url, timeout):
    request = urllib.request.Request(url, data=SEED, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.load(response)
    if len(body["predictions"][0]) != 22:
        raise SystemExit(f"unexpected answer from {url}: {body}")


def wait_port(port, deadline, what):
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not listen on :{port}")
            time.sleep(0.001)


def base_env():
    return {
        "PATH": os.environ["PATH"],
        "ORT_DYLIB_PATH": os.path.join(ROOT, ".ort/lib/libonnxruntime.so.1.31.1"),
        "ML_API_MODEL_DIR": os.path.join(ROOT, "models"),
        "ML_API_LOG_FORMAT": "json",
        "RUST_LOG": "warn",
    }


def coldstart_serve(binary, cgroup):
    port = free_port()
    env = dict(base_env(), ML_API_ADDR=f"127.0.0.1:{port}", ML_API_GRPC_ADDR="127.0.0.1:0")
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "serve"], env=env, cwd=ROOT, preexec_fn=join_cgroup(cgroup),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 60
        while True:
            try:
                post_predict(f"http://127.0.0.1:{port}/predict", 5)
                return (time.monotonic() - t0) * 1000
            except OSError:  # not listening yet (refused), or not ready
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"ml-api serve did not answer (exit {proc.poll()})")
                time.sleep(0.001)
    finally:
        proc.kill()
        proc.wait()


def coldstart_lambda(binary, cgroup, cargo_lambda):
    port = free_port()
    emulator = subprocess.Popen([cargo_lambda, "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1",
                                 "-P", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    proc = None
    try:
        wait_port(port, time.monotonic() + 60, "cargo lambda watch")
        answered = {}

        def call():
            try:
                post_predict(f"http://127.0.0.1:{port}/lambda-url/ml-api/predict", 60)
                answered["at"] = time.monotonic()
            except Exception as e:  # reported below
                answered["error"] = e
        caller = threading.Thread(target=call)
        caller.start()
        # The request is queued before the function exists: wait until the emulator holds it
        # (its connection is established and the request written) before the exec.
        time.sleep(0.05)
        env = dict(base_env(), AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{port}/.rt/ml-api",
                   AWS_LAMBDA_FUNCTION_NAME="ml-api", AWS_LAMBDA_FUNCTION_VERSION="1",
                   AWS_LAMBDA_FUNCTION_MEMORY_SIZE=os.environ.get("MEMORY_MB", "1024"))
        t0 = time.monotonic()
        proc = subprocess.Popen([binary], env=env, cwd=ROOT, preexec_fn=join_cgroup(cgroup),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caller.join(60)
        if "at" not in answered:
            raise SystemExit(f"the function did not answer: {answered.get('error')}")
        return (answered["at"] - t0) * 1000
    finally:
        for p in (proc, emulator):
            if p is not None:
                p.kill()
                p.wait()


def coldstart(args):
    mode, binary, n, cgroup = args[0], args[1], int(args[2]), args[3]
    samples = []
    for _ in range(n):
        if mode == "serve":
            samples.append(coldstart_serve(binary, cgroup))
        else:
            samples.append(coldstart_lambda(binary, cgroup, args[4]))
    print(json.dumps({"ms": [round(s, 1) for s in samples]}))


def report(out):
    m = json.load(open(os.path.join(out, "measurements.json")))
    sides = m["sides"]
    names = [s["label"] for s in sides]
    rows = []

    def row(label, cells):
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def cold(s):
        ms = s["coldstart_ms"]
        return f"median {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f}; {len(ms)} starts)"
    row("cold start: process start → first answered `/predict`", [cold(s) for s in sides])
    for i, rate in enumerate(m["rates"]):
        cells_lat, cells_tput, cells_cpu = [], [], []
        for s in sides:
            run = s["runs"][i]
            k6 = json.load(open(os.path.join(out, run["summary"])))["metrics"]
            lat = next(v for k, v in k6.items() if k.startswith("http_req_duration{scenario:"))
            reqs = k6["http_reqs"]["count"]
            failed = k6.get("http_req_failed", {}).get("passes", 0)
            dropped = k6.get("dropped_iterations", {}).get("count", 0)
            achieved = reqs / run["seconds"]
            cells_lat.append(f"p50 {lat['med']:.2f} / p95 {lat['p(95)']:.2f} / p99 {lat['p(99)']:.2f} ms "
                             f"({failed} unexpected answers of {reqs}, {dropped} not sent on time)")
            server = run["server_cpu_s"] / run["seconds"]
            total = (run["server_cpu_s"] + run["proxy_cpu_s"]) / run["seconds"]
            cells_tput.append(f"{achieved:.0f} req/s on {server:.2f} cores ({total:.2f} with the "
                              f"{s['proxy']})")
            cells_cpu.append(f"{achieved / server:,.0f} req/s per core ({achieved / total:,.0f} with the {s['proxy']})")
            load = run["load"]
        row(f"latency at {rate} req/s (k6, client side)", cells_lat)
        row(f"served at {rate} req/s", cells_tput)
        row(f"throughput per core at {rate} req/s", cells_cpu)
        row(f"machine during the {rate} req/s runs", [f"{s['runs'][i]['load']}" for s in sides])
    row("memory (RSS) per process, after the runs (peak)", [
        ", ".join(f"{p['rss_mib']:.0f} MiB ({p['hwm_mib']:.0f})" for p in s["rss"]) for s in sides])
    print(f"| | {' | '.join(names)} |")
    print("|---|" + "---|" * len(names))
    print("\n".join(rows))


if __name__ == "__main__":
    {"coldstart": coldstart, "report": lambda a: report(a[0])}[sys.argv[1]](sys.argv[2:])
