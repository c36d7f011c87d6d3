-- wrk script for a JSON `POST` (used by scripts/bench.sh for ml-api's `/predict` and V2
-- `/v2/models/{name}/infer`, and for the bench-only baseline server's `/predict`).
--
--   WRK_BODY_FILE=tests/fixtures/seed_request.json wrk -t1 -c16 -d15s \
--     -s loadtest/wrk/predict.lua http://127.0.0.1:5001/predict
--
-- Sends the file's bytes unchanged as the body with Content-Type: application/json (or
-- WRK_CONTENT_TYPE) plus the headers of WRK_HEADERS ("Name: value", several separated by
-- ";"; scripts/bench.sh sends V2 binary tensors with Inference-Header-Content-Length), and at the
-- end prints one line `WRK_RESULT {json}` (latencies in milliseconds) after wrk's own summary.
-- `non_2xx` is wrk's `errors.status` (responses with status >= 400; neither server redirects).

local path = os.getenv("WRK_BODY_FILE") or "tests/fixtures/seed_request.json"
local file = assert(io.open(path, "rb"), "cannot open WRK_BODY_FILE " .. path)
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
for header in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^;]+") do
  local name, value = string.match(header, "^%s*([^:]+):%s*(.-)%s*$")
  assert(name, "WRK_HEADERS entry is not `Name: value`: " .. header)
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local function ms(us) return us / 1000 end
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_s":%.3f,"rps":%.1f,' ..
    '"latency_ms":{"mean":%.3f,"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f},' ..
    '"non_2xx":%d,"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"bytes":%d}\n',
    summary.requests, seconds, summary.requests / seconds,
    ms(latency.mean), ms(latency:percentile(50)), ms(latency:percentile(90)),
    ms(latency:percentile(99)), ms(latency.max),
    e.status, e.connect, e.read, e.write, e.timeout, summary.bytes))
end
