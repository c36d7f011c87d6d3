// The target: 1,000,000 requests a day.
//
// 1,000,000 / 86,400 s = 11.6 requests/s on average. Traffic is diurnal; with a peak-to-average
// factor of 10 the peak hour runs at ~116 requests/s. Two variants (MODE):
//
//   MODE=peak (default)  a constant arrival rate of RATE (116) requests/s for DURATION (2m):
//                        open-model load, so a slow server cannot slow the load down.
//   MODE=compressed      the day's requests pushed through as fast as the stack answers:
//                        TOTAL (1000000) x FRACTION (0.05 -> 50,000 requests) over VUS (16)
//                        closed-loop virtual users; scripts/loadtest.sh reports the throughput
//                        as minutes per 1,000,000 requests (extrapolated when FRACTION < 1).
//
// Requests: the realistic mix of lib/traffic.js (single, top_k and batch predictions, a
// trained model, 3 % invalid requests that must get their 4xx), from CLIENTS simulated clients.
//
// Thresholds (exit 99 when one fails):
//   error ratio < 0.1 %  (unexpected answers: a valid request not answered 200, an invalid one
//                        not answered its 4xx) - 99.9 % is the availability SLO: at 1M/day it
//                        allows 1,000 failed requests a day, and it is what a client retrying
//                        once turns into effectively no visible failure;
//   p95 < 50 ms          the prediction sits in a page render or an API call of the caller,
//                        whose own budget is typically 200-300 ms; the model itself takes well
//                        under a millisecond, so 50 ms is all queueing, network and ingress;
//   p99 < 100 ms         the tail the caller's timeout must accommodate; also the target of
//                        the MlApiPredictLatencyHigh alert (deploy/prometheus/alerts.yml).
// In MODE=compressed the server is saturated on purpose (closed loop: latency = queueing at
// the bottleneck), so only the error ratio is a threshold there; latencies are reported.
import { Gauge } from 'k6/metrics';
import { request, setupTraffic, perKindThresholds, TREND_STATS } from './lib/traffic.js';

// min and max: when the first and the last request of the scenario were sent (epoch seconds),
// for loadtest/report.py's requests/s and minutes per 1M.
const clock = new Gauge('scenario_clock_s');

const MODE = __ENV.MODE || 'peak';
const RATE = parseFloat(__ENV.RATE || '116');
const TOTAL = parseInt(__ENV.TOTAL || '1000000', 10);
const FRACTION = parseFloat(__ENV.FRACTION || '0.05');
const VUS = parseInt(__ENV.VUS || '16', 10);

const scenarios = {
  peak: {
    executor: 'constant-arrival-rate',
    rate: RATE,
    timeUnit: '1s',
    duration: __ENV.DURATION || '2m',
    preAllocatedVUs: Math.max(10, Math.ceil(RATE / 5)),
    maxVUs: Math.max(100, Math.ceil(RATE * 2)),
  },
  compressed: {
    executor: 'shared-iterations',
    vus: VUS,
    iterations: Math.round(TOTAL * FRACTION),
    maxDuration: __ENV.MAX_DURATION || '2h',
  },
};
if (!scenarios[MODE]) throw new Error(`MODE=${MODE}: expected peak or compressed`);

const thresholds = Object.assign({
  http_req_failed: ['rate<0.001'],
  checks: ['rate>0.999'],
}, perKindThresholds(MODE));
if (MODE === 'peak') {
  thresholds[`http_req_duration{scenario:${MODE}}`] = ['p(95)<50', 'p(99)<100'];
  thresholds.dropped_iterations = ['count==0'];
} else {
  thresholds[`http_req_duration{scenario:${MODE}}`] = ['max>=0'];
}

export const options = {
  scenarios: { [MODE]: scenarios[MODE] },
  thresholds,
  summaryTrendStats: TREND_STATS,
  setupTimeout: '180s',
  discardResponseBodies: false,
};

export function setup() {
  return setupTraffic();
}

export default function (data) {
  if (MODE === 'compressed') clock.add(Date.now() / 1000);
  request(data);
  if (MODE === 'compressed') clock.add(Date.now() / 1000);
}
