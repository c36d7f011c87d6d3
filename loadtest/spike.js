// Spike: a sudden 20x burst on top of a steady load, plus one greedy client.
//
//   steady   SPIKE_BASE (116: the peak of 1M requests/day) requests/s from the usual client
//            population, throughout
//   burst    +SPIKE_BASE x (SPIKE_FACTOR - 1) requests/s (20x in all) after SPIKE_BEFORE (30s),
//            reached within a second, held SPIKE_HOLD (30s), gone within a second. At the
//            default that is ~2,300 requests/s: more than a 2-core box with k6 on it answers
//            within the SLO, so the burst queues (k6 drops what it cannot start: reported)
//   greedy   during the burst, one API key alone sends GREEDY_RATE (300) requests/s: over its
//            per-client limit (chart: 100/s, burst 200, per replica) on every replica
//   then SPIKE_AFTER (40s) of the steady load alone.
//
// What must hold (thresholds):
//   - no 5xx at all: the burst queues (ml-api's inference queue holds 1024 batches per replica,
//     nginx retries a replica's 503 on the other) instead of failing;
//   - rate limiting hits only the greedy client: it gets 429s (with Retry-After), nobody else
//     does; errors (an unexpected answer) < 0.1 % for the others;
//   - the queue drains: in the last 30 s (phase `after`) p95 < 50 ms and p99 < 100 ms again.
import { request, setupTraffic, TREND_STATS } from './lib/traffic.js';
import exec from 'k6/execution';
import { check } from 'k6';

const BASE = parseFloat(__ENV.SPIKE_BASE || '116');
const FACTOR = parseFloat(__ENV.SPIKE_FACTOR || '20');
const BEFORE = parseInt(__ENV.SPIKE_BEFORE || '30', 10);
const HOLD = parseInt(__ENV.SPIKE_HOLD || '30', 10);
const AFTER = parseInt(__ENV.SPIKE_AFTER || '40', 10);
const GREEDY = parseFloat(__ENV.GREEDY_RATE || '300');
const BURST = BASE * (FACTOR - 1);

export const options = {
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate', rate: BASE, timeUnit: '1s',
      duration: `${BEFORE + HOLD + AFTER}s`, preAllocatedVUs: 10, maxVUs: 200,
    },
    burst: {
      executor: 'ramping-arrival-rate', startRate: 0, timeUnit: '1s', startTime: `${BEFORE}s`,
      stages: [{ target: BURST, duration: '1s' }, { target: BURST, duration: `${HOLD - 2}s` }, { target: 0, duration: '1s' }],
      preAllocatedVUs: 100, maxVUs: 2000,
    },
    greedy: {
      executor: 'constant-arrival-rate', rate: GREEDY, timeUnit: '1s', startTime: `${BEFORE}s`,
      duration: `${HOLD}s`, preAllocatedVUs: 20, maxVUs: 500,
    },
  },
  thresholds: {
    server_errors: ['count==0'],
    'http_req_failed{scenario:steady}': ['rate<0.001'],
    'http_req_failed{scenario:burst}': ['rate<0.001'],
    'rate_limited{scenario:steady}': ['count==0'],
    'rate_limited{scenario:burst}': ['count==0'],
    'rate_limited{scenario:greedy}': ['count>0'],
    'checks{scenario:greedy}': ['rate==1'],
    'http_req_duration{phase:before}': ['p(95)<50', 'p(99)<100'],
    'http_req_duration{phase:burst}': ['max>=0'],
    'http_req_duration{phase:after}': ['p(95)<50', 'p(99)<100'],
    'http_reqs{phase:burst}': ['count>=0'],
    'http_reqs{scenario:greedy}': ['count>=0'],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '180s',
};

export function setup() {
  return setupTraffic();
}

// Phase by time since the test started (the first 10 s of `after` still drain the burst).
function phase(data) {
  const t = (Date.now() - data.startedAt) / 1000;
  if (t < BEFORE) return 'before';
  if (t < BEFORE + HOLD + 10) return 'burst';
  return 'after';
}

export default function (data) {
  const tags = { phase: phase(data) };
  if (exec.scenario.name === 'greedy') {
    const res = request(data, { client: 'loadtest-greedy', expect429: true, mix: { single: 100 }, tags });
    if (res.status === 429) {
      check(res, { 'greedy: 429 carries Retry-After': (r) => !!r.headers['Retry-After'] }, tags);
    }
  } else {
    request(data, { tags });
  }
}
