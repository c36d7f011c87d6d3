// Soak: the peak rate for a long time; memory must stay flat and errors and latency must not
// drift.
//   SOAK_RATE 116 requests/s, SOAK_DURATION 30m, the realistic mix
//   SOAK_RETRAIN_EVERY 120 (s): a new version of model `loadtest-soak` is trained this often and
//     a share of predictions goes to `loadtest-soak` by name, so replicas keep loading new
//     versions (model cache churn, pub/sub) as a real deployment would; 0 turns it off
// teardown() reads Prometheus (PROM_URL, required: the local cluster's is in its env file):
//   - RSS (process_resident_memory_bytes) of every replica: the median of the last 15 % of the
//     run against the median of 10-25 % (after warm-up); growth must stay under
//     SOAK_MAX_RSS_GROWTH (10) %;
//   - p99 of /predict (ml_api_http_request_duration_seconds) over the first and the last
//     quarter: the last may exceed the first by at most SOAK_MAX_P99_DRIFT_MS (25);
//   - 5xx answered by the replicas in the second half of the run: none.
import http from 'k6/http';
import { fail } from 'k6';
import { Counter, Gauge, Trend } from 'k6/metrics';
import { request, setupTraffic, trainModel, clientHeaders, BASE_URL, PROM_URL, promQuery, promRange, TRAIN, TREND_STATS } from './lib/traffic.js';
import exec from 'k6/execution';

const RATE = parseFloat(__ENV.SOAK_RATE || '116');
const DURATION = __ENV.SOAK_DURATION || '30m';
// TRAIN=0: no retraining (nothing is written).
const RETRAIN = TRAIN ? parseInt(__ENV.SOAK_RETRAIN_EVERY || '120', 10) : 0;

const rssGrowth = new Trend('soak_rss_growth_pct');
const rssMax = new Gauge('soak_rss_max_mb');
const p99Drift = new Trend('soak_p99_drift_ms');
const late5xx = new Counter('soak_5xx_second_half');

const scenarios = {
  soak: {
    executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: DURATION,
    preAllocatedVUs: 20, maxVUs: 300,
  },
};
if (RETRAIN > 0) {
  scenarios.retrain = {
    executor: 'constant-arrival-rate', rate: 1, timeUnit: `${RETRAIN}s`, duration: DURATION,
    preAllocatedVUs: 1, maxVUs: 2, exec: 'retrain',
  };
}

export const options = {
  scenarios,
  thresholds: {
    'http_req_failed{scenario:soak}': ['rate<0.001'],
    'http_req_duration{scenario:soak}': ['p(95)<50', 'p(99)<100'],
    checks: ['rate>0.999'],
    dropped_iterations: ['count==0'],
    soak_rss_growth_pct: [`max<${parseFloat(__ENV.SOAK_MAX_RSS_GROWTH || '10')}`],
    soak_p99_drift_ms: [`max<${parseFloat(__ENV.SOAK_MAX_P99_DRIFT_MS || '25')}`],
    soak_5xx_second_half: ['count==0'],
    soak_rss_max_mb: ['value>0'],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '180s',
  teardownTimeout: '120s',
};

export function setup() {
  if (!PROM_URL) fail('soak.js needs PROM_URL (a Prometheus that scrapes the replicas)');
  const data = setupTraffic();
  if (RETRAIN > 0) data.soakModel = trainModel('loadtest-soak').modelName;
  data.startedAt = Date.now();
  return data;
}

export default function (data) {
  // One prediction in 20 goes to the model that is being retrained.
  if (data.soakModel && exec.scenario.iterationInTest % 20 === 7) {
    const res = http.post(`${BASE_URL}/models/${data.soakModel}/predict`,
      JSON.stringify({ sepal_length: 5.9, sepal_width: 3.0, petal_length: 5.1, petal_width: 1.8 }),
      { headers: clientHeaders(), tags: { kind: 'trained_post', name: 'POST /models/{model}/predict' } });
    if (res.status >= 500) fail(`${res.status} from ${data.soakModel}`);
    return;
  }
  request(data);
}

export function retrain() {
  trainModel('loadtest-soak', 300);
}

const median = (xs) => { const s = xs.slice().sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN; };

export function teardown(data) {
  const start = data.startedAt / 1000;
  const end = Date.now() / 1000;
  const span = end - start;
  const step = Math.max(5, Math.floor(span / 200));
  const series = promRange('process_resident_memory_bytes{job=~"ml-api|ml-api-worker"}', start, end, step);
  if (!series.length) fail('no process_resident_memory_bytes series in Prometheus');
  for (const s of series) {
    const pts = s.values.map(([t, v]) => [t, parseFloat(v)]);
    const win = (a, b) => pts.filter(([t]) => t >= start + a * span && t <= start + b * span).map(([, v]) => v);
    const base = median(win(0.10, 0.25));
    const last = median(win(0.85, 1.0));
    const growth = 100 * (last - base) / base;
    const maxMb = Math.max(...pts.map(([, v]) => v)) / 1048576;
    const who = `${s.metric.job} ${s.metric.instance}`;
    console.log(`soak RSS ${who}: ${(base / 1048576).toFixed(1)} MiB after warm-up -> ${(last / 1048576).toFixed(1)} MiB at the end (${growth.toFixed(1)} %), max ${maxMb.toFixed(1)} MiB`);
    if (s.metric.job === 'ml-api') {
      rssGrowth.add(growth, { instance: s.metric.instance });
      rssMax.add(maxMb, { instance: s.metric.instance });
    }
  }
  const quarter = Math.max(60, Math.floor(span / 4));
  const p99 = (t) => {
    const r = promQuery(`histogram_quantile(0.99, sum by (le) (increase(ml_api_http_request_duration_seconds_bucket{job="ml-api",route="/predict"}[${quarter}s])))`, t);
    return r.length ? 1000 * parseFloat(r[0].value[1]) : NaN;
  };
  const first = p99(start + quarter);
  const lastP99 = p99(end);
  console.log(`soak p99 of /predict (server side): first quarter ${first.toFixed(1)} ms, last quarter ${lastP99.toFixed(1)} ms`);
  p99Drift.add(lastP99 - first);
  const half = Math.floor(span / 2);
  const r5 = promQuery(`sum(increase(ml_api_http_requests_total{job="ml-api",status=~"5.."}[${half}s]))`, end);
  const n5 = r5.length ? parseFloat(r5[0].value[1]) : 0;
  console.log(`soak 5xx answered by the replicas in the second half: ${n5}`);
  late5xx.add(Math.round(n5));
}
