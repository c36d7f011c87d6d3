"""Drives ml-api's Open Inference Protocol (V2) routes with the official `tritonclient[http]`,
a client nobody here wrote, and checks its answers against ml-api's own `/predict`.

Usage: python tests/v2/tritonclient_check.py http://127.0.0.1:PORT
"""
import json
import math
import sys
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

BASE = sys.argv[1]
client = httpclient.InferenceServerClient(url=BASE.removeprefix("http://"))
checks = 0


def check(condition, message):
    global checks
    if not condition:
        raise AssertionError(message)
    checks += 1


def predict(records):
    request = urllib.request.Request(
        BASE + "/predict",
        data=json.dumps(records).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return np.array(json.load(response)["predictions"], dtype=np.float64)


def tensors(metadata, records, binary):
    inputs = []
    for spec in metadata["inputs"]:
        values = [record.get(spec["name"]) for record in records]
        if spec["datatype"] == "BYTES":
            array = np.array(values, dtype=object)
        elif spec["datatype"] == "INT64":
            array = np.array(values, dtype=np.int64)
        elif spec["datatype"] == "FP32":
            array = np.array([math.nan if v is None else v for v in values], dtype=np.float32)
        else:
            raise AssertionError(f"unexpected datatype {spec['datatype']}")
        array = array.reshape(-1, 1)
        tensor = httpclient.InferInput(spec["name"], list(array.shape), spec["datatype"])
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


check(client.is_server_live(), "server live")
check(client.is_server_ready(), "server ready")
check(client.is_model_ready("santander"), "model ready")
check(client.is_model_ready("santander", "1"), "model version 1 ready")
check(not client.is_model_ready("no-such-model"), "unknown model not ready")
server = client.get_server_metadata()
check(server["name"] == "ml-api", f"server metadata {server}")

metadata = client.get_model_metadata("santander")
check(metadata["platform"] == "onnxruntime_onnx", f"platform {metadata}")
check(len(metadata["inputs"]) == 20, "20 inputs, one per feature")
check(metadata["outputs"][0]["name"] == "probabilities", "probabilities output")
check(metadata["outputs"][0]["shape"] == [-1, 22], "22 products")

golden = json.load(open("models/santander/golden.json"))
all_records = [case["record"] for case in golden]
with_income = [r for r in all_records if r.get("renta") is not None]

# JSON tensors (no NaN in JSON), then the binary-data extension (NaN = missing income).
for binary, records in ((False, with_income), (True, all_records)):
    for output_binary in (False, True):
        result = client.infer(
            "santander",
            tensors(metadata, records, binary),
            outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=output_binary)],
            request_id="req-42",
        )
        probabilities = result.as_numpy("probabilities")
        check(probabilities.shape == (len(records), 22), f"shape {probabilities.shape}")
        expected = predict(records)
        gap = float(np.abs(probabilities.astype(np.float64) - expected).max())
        check(gap <= 1e-6, f"V2 equals /predict (binary inputs={binary}): max gap {gap}")
        output = result.get_response()["outputs"][0]
        if output_binary:
            size = output.get("parameters", {}).get("binary_data_size")
            check("data" not in output and size == 4 * 22 * len(records), f"binary output {output}")
        else:
            check("data" in output and "parameters" not in output, f"JSON output {output}")
        check(result.get_response()["id"] == "req-42", "request id echoed")
        check(result.get_response()["model_version"] == "1", "model version reported")

# No output named: tritonclient asks for every output in binary (`binary_data_output`).
versioned = client.infer("santander", tensors(metadata, with_income[:1], False), model_version="1")
check(versioned.as_numpy("probabilities").shape == (1, 22), "versioned inference")
output = versioned.get_response()["outputs"][0]
check(output["parameters"]["binary_data_size"] == 88, f"binary by default {output}")
gap = float(np.abs(versioned.as_numpy("probabilities").astype(np.float64) - predict(with_income[:1])).max())
check(gap <= 1e-6, f"binary output equals /predict: max gap {gap}")

for bad_call, what in (
    (lambda: client.infer("no-such-model", tensors(metadata, with_income[:1], False)), "unknown model"),
    (lambda: client.infer("santander", tensors(metadata, with_income[:1], False)[:5]), "missing inputs"),
):
    try:
        bad_call()
    except InferenceServerException as error:
        check(error.status() in ("400", "404"), f"{what}: status {error.status()}")
        check(bool(error.message()), f"{what}: message")
    else:
        raise AssertionError(f"{what} was accepted")

print(f"tritonclient: {checks} passed, 0 failed")
