// Stress: find the knee. The arrival rate climbs in steps (open model: k6 starts requests on
// schedule whatever the latency) and each step is held long enough to measure; every request is
// tagged with its step, so the summary has latency, errors and the achieved rate per step.
// loadtest/report.py prints the table and the knee: the highest step whose achieved rate is
// >= 95 % of its target with errors < 0.1 %, p95 < 50 ms and p99 < 100 ms (the SLO of
// daily-1m.js). The steps past the knee show how it degrades (latency first, then errors).
//   STRESS_RATES  "100,200,300,400,500,600,700,800,1000,1200" requests/s
//   STRESS_STEP   30s held per step;  STRESS_RAMP 5s between steps
//   MIX           realistic (default), santander (single records, bundled model), trained
//                 (single records, the iris model trained in setup), batch
//   STRESS_MAX_VUS 1000
// Thresholds only fail on a broken run (a 5xx is not expected even at the top step: the queue
// holds 1024 batches per replica and the request timeout is 10 s); the knee is reported.
import { request, setupTraffic, TREND_STATS } from './lib/traffic.js';
import exec from 'k6/execution';
import { Gauge } from 'k6/metrics';

const stepSeconds = new Gauge('stress_step_seconds'); // for loadtest/report.py

const RATES = (__ENV.STRESS_RATES || '100,200,300,400,500,600,700,800,1000,1200').split(',').map(Number);
const STEP = __ENV.STRESS_STEP || '30s';
const RAMP = __ENV.STRESS_RAMP || '5s';
const seconds = (d) => parseFloat(d) * ({ ms: 0.001, s: 1, m: 60, h: 3600 }[d.replace(/[0-9.]/g, '')] || 1);

const stages = [];
for (const r of RATES) stages.push({ target: r, duration: RAMP }, { target: r, duration: STEP });

// [start, end) of each hold, in seconds from the scenario's start.
const holds = [];
let t = 0;
for (const r of RATES) {
  t += seconds(RAMP);
  holds.push({ rate: r, start: t, end: t + seconds(STEP) });
  t += seconds(STEP);
}

const thresholds = {
  checks: ['rate>0.9'],
  'server_errors{kind:single}': ['count>=0'],
};
for (const r of RATES) {
  thresholds[`http_req_duration{stage:${r}}`] = ['max>=0'];
  thresholds[`http_reqs{stage:${r}}`] = ['count>=0'];
  thresholds[`http_req_failed{stage:${r}}`] = ['rate>=0'];
}

export const options = {
  scenarios: {
    stress: {
      executor: 'ramping-arrival-rate',
      startRate: RATES[0],
      timeUnit: '1s',
      stages,
      preAllocatedVUs: 50,
      maxVUs: parseInt(__ENV.STRESS_MAX_VUS || '1000', 10),
    },
  },
  thresholds,
  summaryTrendStats: TREND_STATS,
  setupTimeout: '180s',
};

export function setup() {
  return setupTraffic();
}

export default function (data) {
  const elapsed = (Date.now() - exec.scenario.startTime) / 1000;
  const hold = holds.find((h) => elapsed >= h.start && elapsed < h.end);
  if (exec.scenario.iterationInTest === 0) stepSeconds.add(seconds(STEP));
  request(data, { tags: { stage: hold ? String(hold.rate) : 'ramp' } });
}
