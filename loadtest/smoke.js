// Smoke test (seconds; part of `make test` through `scripts/loadtest.sh ci`): every request
// kind of lib/traffic.js and every invalid variant, in turn, through the ingress; every answer
// is checked, body included. Zero unexpected answers allowed.
//   k6 run -e BASE_URL=http://127.0.0.1:5001 -e ML_API_ADMIN_API_KEY=... loadtest/smoke.js
// SMOKE_RATE (10 requests/s) and SMOKE_DURATION (10s). TRAIN=0 writes nothing (no training).
import { request, setupTraffic, KINDS, TREND_STATS } from './lib/traffic.js';

const RATE = parseInt(__ENV.SMOKE_RATE || '10', 10);

const thresholds = {
  http_req_failed: ['rate==0'],
  checks: ['rate==1'],
  server_errors: ['count==0'],
  // Functional, not a latency test (CI runs the debug build on a busy box): a generous bound.
  'http_req_duration{scenario:smoke}': ['p(95)<500'],
};
for (const k of KINDS) {
  thresholds[`http_reqs{kind:${k}}`] = ['count>0'];
}

export const options = {
  scenarios: {
    smoke: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.SMOKE_DURATION || '10s',
      preAllocatedVUs: 4,
      maxVUs: 20,
    },
  },
  thresholds,
  summaryTrendStats: TREND_STATS,
  setupTimeout: '120s',
};

export function setup() {
  return setupTraffic();
}

export default function (data) {
  request(data, { roundRobin: true });
}
