"""Drives ml-api's Open Inference Protocol over gRPC with the official `tritonclient[grpc]`, a
client nobody here wrote, and checks its answers against ml-api's own `/predict`.

tritonclient sends raw tensors (`raw_input_contents`); typed tensors (`contents`) go through the
stub tritonclient ships (`tritonclient.grpc.service_pb2_grpc`).

Usage: python tests/v2/tritonclient_grpc_check.py http://127.0.0.1:PORT 127.0.0.1:GRPC_PORT
(ADMIN_API_KEY in the environment when the server requires one for POST /keys, as the local
cluster's does: scripts/loadtest.sh ci runs this through its nginx.)
"""
import json
import math
import os
import sys
import urllib.request

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

BASE, GRPC = sys.argv[1], sys.argv[2]
client = grpcclient.InferenceServerClient(url=GRPC)
checks = 0


def check(condition, message):
    global checks
    if not condition:
        raise AssertionError(message)
    checks += 1


def post(path, body, admin=False):
    headers = {"Content-Type": "application/json"}
    if admin and os.environ.get("ADMIN_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['ADMIN_API_KEY']}"
    request = urllib.request.Request(BASE + path, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def predict(records):
    return np.array(post("/predict", records)["predictions"], dtype=np.float64)


def arrays(metadata, records):
    """One [N, 1] array per model input, in the metadata's datatype (NaN: missing income)."""
    out = []
    for spec in metadata.inputs:
        values = [record.get(spec.name) for record in records]
        if spec.datatype == "BYTES":
            array = np.array(values, dtype=object)
        elif spec.datatype == "INT64":
            array = np.array(values, dtype=np.int64)
        elif spec.datatype == "FP32":
            array = np.array([math.nan if v is None else v for v in values], dtype=np.float32)
        else:
            raise AssertionError(f"unexpected datatype {spec.datatype}")
        out.append((spec.name, spec.datatype, array.reshape(-1, 1)))
    return out


def raw_inputs(metadata, records):
    inputs = []
    for name, datatype, array in arrays(metadata, records):
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def typed_request(metadata, records):
    request = service_pb2.ModelInferRequest(model_name="santander", id="typed-1")
    for name, datatype, array in arrays(metadata, records):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        flat = array.reshape(-1).tolist()
        if datatype == "BYTES":
            tensor.contents.bytes_contents.extend(v.encode() for v in flat)
        elif datatype == "INT64":
            tensor.contents.int64_contents.extend(flat)
        else:
            tensor.contents.fp32_contents.extend(flat)
    return request


def close(got, records, what):
    check(got.shape == (len(records), 22), f"{what}: shape {got.shape}")
    gap = float(np.abs(got.astype(np.float64) - predict(records)).max())
    check(gap <= 1e-6, f"{what}: gRPC equals /predict, max gap {gap}")


def refused(call, code, what):
    try:
        call()
    except InferenceServerException as error:
        check(code in str(error.status()), f"{what}: status {error.status()} ({error.message()})")
        check(bool(error.message()), f"{what}: message")
    except grpc.RpcError as error:
        check(error.code().name == code, f"{what}: status {error.code()} ({error.details()})")
    else:
        raise AssertionError(f"{what} was accepted")


check(client.is_server_live(), "server live")
check(client.is_server_ready(), "server ready")
check(client.is_model_ready("santander"), "model ready")
check(client.is_model_ready("santander", "1"), "model version 1 ready")
check(not client.is_model_ready("no-such-model"), "unknown model not ready")
check(client.get_server_metadata().name == "ml-api", "server metadata")

metadata = client.get_model_metadata("santander")
check(metadata.platform == "onnxruntime_onnx", f"platform {metadata}")
check(len(metadata.inputs) == 20, "20 inputs, one per feature")
check(metadata.outputs[0].name == "probabilities", "probabilities output")
check(list(metadata.outputs[0].shape) == [-1, 22], "22 products")

golden = json.load(open("models/santander/golden.json"))
records = [case["record"] for case in golden]

# Raw tensors (tritonclient's own encoding): one record, then the whole batch (NaN incomes).
for batch in (records[:1], records):
    result = client.infer(
        "santander",
        raw_inputs(metadata, batch),
        outputs=[grpcclient.InferRequestedOutput("probabilities")],
        request_id="req-42",
    )
    close(result.as_numpy("probabilities"), batch, f"raw, {len(batch)} records")
    response = result.get_response()
    check(response.id == "req-42", "request id echoed")
    check(response.model_version == "1", "model version reported")
    check(len(response.raw_output_contents) == 1, "raw request, raw answer")

versioned = client.infer("santander", raw_inputs(metadata, records[:1]), model_version="1")
check(versioned.as_numpy("probabilities").shape == (1, 22), "versioned inference")

# Typed tensors (`contents`), answered typed.
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(GRPC))
for batch in (records[:1], records):
    response = stub.ModelInfer(typed_request(metadata, batch))
    check(len(response.raw_output_contents) == 0, "typed request, typed answer")
    output = response.outputs[0]
    got = np.array(output.contents.fp32_contents, dtype=np.float32).reshape(list(output.shape))
    close(got, batch, f"typed, {len(batch)} records")

index = client.get_model_repository_index()
listed = {(m.name, m.version, m.state) for m in index.models}
check(("santander", "1", "READY") in listed, f"repository index {listed}")
rest_index = post("/v2/repository/index", {})
check({"name": "santander", "version": "1", "state": "READY", "reason": ""} in rest_index,
      f"REST repository index {rest_index}")

refused(lambda: client.infer("no-such-model", raw_inputs(metadata, records[:1])), "NOT_FOUND",
        "unknown model")
refused(lambda: client.infer("santander", raw_inputs(metadata, records[:1])[:5]), "INVALID_ARGUMENT",
        "missing inputs")
bad = typed_request(metadata, records[:1])
bad.inputs[3].contents.int64_contents[0] = 500
refused(lambda: stub.ModelInfer(bad), "INVALID_ARGUMENT", "age out of range")

key = post("/keys", {"name": "tritonclient-grpc", "rate_per_s": 0.001, "burst": 1}, admin=True)["key"]
check(client.is_model_ready("santander", headers={"x-api-key": key}), "within the key's quota")
refused(lambda: client.is_model_ready("santander", headers={"x-api-key": key}),
        "RESOURCE_EXHAUSTED", "over the key's quota")

print(f"tritonclient[grpc]: {checks} passed, 0 failed")
