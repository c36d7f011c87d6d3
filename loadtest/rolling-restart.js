// Traffic for scripts/rolling-restart-test.sh: the realistic mix at RR_RATE (50) requests/s,
// every answer checked (body included), until the script stops k6 through its REST API once
// every replica has been restarted. Zero failed requests allowed.
import { request, setupTraffic, TREND_STATS } from './lib/traffic.js';

export const options = {
  scenarios: {
    rolling: {
      executor: 'constant-arrival-rate',
      rate: parseFloat(__ENV.RR_RATE || '50'),
      timeUnit: '1s',
      duration: __ENV.RR_MAX_DURATION || '10m',
      preAllocatedVUs: 10,
      maxVUs: 200,
    },
  },
  thresholds: {
    http_req_failed: ['rate==0'],
    server_errors: ['count==0'],
    checks: ['rate==1'],
    'http_req_duration{scenario:rolling}': ['max>=0'],
  },
  summaryTrendStats: TREND_STATS,
  setupTimeout: '120s',
};

export function setup() {
  return setupTraffic();
}

export default function (data) {
  request(data);
}
