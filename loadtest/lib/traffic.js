// Realistic ml-api traffic for the k6 scripts in loadtest/: one `request()` call sends one
// HTTP request of a kind drawn from a mix, and checks its answer.
//
//   single        POST /predict, one customer record from a varied pool
//   top_k         POST /predict?top_k=3
//   batch         POST /predict with 2-32 records (a JSON array)
//   trained_post  POST /models/{id or name}/predict on an iris model trained in setup()
//   trained_get   seed 2's GET /models/{id}?sepal_length=...
//   invalid       a request that must get its 4xx (422, 400, 415, 404, 401), and the
//                 documented error code
//
// TRAIN=0 (against a production cluster): nothing is written. setup() trains no model, the
// trained_* kinds and the invalid request that needs one are left out of every mix (their
// share goes to `single`), and the only write attempted is the unauthenticated POST /models
// that must be refused with 401 (sent only when an admin key is given, i.e. the server
// requires one).
//
// The record pool is generated from models/santander/card.json (every category and range of
// the model card, with realistic skews: most customers are Spanish residents, some have no
// income on file, some send numbers as strings as the Kaggle CSV does, some use channel codes
// the card has never seen) plus the 20 records of models/santander/golden.json.
//
// Clients: requests are spread over CLIENTS simulated clients (default 2000). Four in five are
// identified by an address in X-Forwarded-For (as a cloud load balancer in front of the
// ingress would append it; the ingress' own address, loopback, is the replicas' trusted proxy),
// one in five by an `x-api-key`. The per-client rate limiter therefore stays on with the
// chart's settings and behaves as in production, instead of seeing one client at 116 req/s.
import http from 'k6/http';
import { check, fail, sleep } from 'k6';
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';
import exec from 'k6/execution';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:5001').replace(/\/+$/, '');
export const PROM_URL = (__ENV.PROM_URL || '').replace(/\/+$/, '');
// ML_API_ADMIN_API_KEY, the name the docs and the chart's NOTES use, or ADMIN_API_KEY.
const ADMIN_API_KEY = __ENV.ML_API_ADMIN_API_KEY || __ENV.ADMIN_API_KEY || '';
export const TRAIN = (__ENV.TRAIN || '1') !== '0';
const CLIENTS = parseInt(__ENV.CLIENTS || '2000', 10);
// Parse and check the body of one answer in CHECK_EVERY (the status is always checked).
const CHECK_EVERY = parseInt(__ENV.CHECK_EVERY || '10', 10);
const TRAINED_NAME = __ENV.TRAINED_NAME || 'loadtest-iris';

// Mixes: weights per kind (summing to 100). MIX=realistic is the default.
const ALL_MIXES = {
  realistic: { single: 71, top_k: 8, batch: 8, trained_post: 6, trained_get: 4, invalid: 3 },
  santander: { single: 100 },             // capacity: the bundled model, one record per request
  trained: { trained_post: 100 },         // capacity: a trained model, one record per request
  batch: { batch: 100 },
};
// With TRAIN=0 the trained kinds' weights go to `single`.
function withoutTraining(mix) {
  const out = {};
  for (const [k, w] of Object.entries(mix)) {
    const to = k.startsWith('trained_') ? 'single' : k;
    out[to] = (out[to] || 0) + w;
  }
  return out;
}
export const MIXES = TRAIN ? ALL_MIXES
  : Object.fromEntries(Object.entries(ALL_MIXES).map(([name, mix]) => [name, withoutTraining(mix)]));

export const serverErrors = new Counter('server_errors'); // any 5xx
export const rateLimited = new Counter('rate_limited');   // 429s

// --- Record pool ----------------------------------------------------------------------------
const card = JSON.parse(open('../../models/santander/card.json'));
const golden = JSON.parse(open('../../models/santander/golden.json'));
const trainSet = JSON.parse(open('../../train.json'));

function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeRecord(r) {
  const f = card.fields;
  const pick = (arr) => arr[Math.floor(r() * arr.length)];
  const cat = (name, common, p) => (common !== undefined && r() < p ? common : pick(f[name].categories));
  const clamp = (name, v) => Math.min(f[name].max, Math.max(f[name].min, v));
  const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const day = (y0, y1) => {
    const y = int(y0, y1), m = int(1, 12), d = int(1, 28);
    return `${y}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
  };
  const rec = {
    fecha_dato: `${pick(['2015', '2016'])}-${String(int(1, 12)).padStart(2, '0')}-28`,
    ncodpers: int(15889, 1553689),
    ind_empleado: cat('ind_empleado', 'N', 0.97),
    pais_residencia: cat('pais_residencia', 'ES', 0.95),
    sexo: cat('sexo'),
    age: clamp('age', Math.round(42 + 14 * normal())),
    fecha_alta: day(1990, 2016),
    ind_nuevo: r() < 0.06 ? 1 : 0,
    antiguedad: clamp('antiguedad', Math.round(Math.abs(80 + 60 * normal()))),
    indrel: r() < 0.98 ? 1 : 99,
    ult_fec_cli_1t: r() < 0.98 ? '' : day(2015, 2016),
    indrel_1mes: r() < 0.95 ? 1 : int(f.indrel_1mes.min, f.indrel_1mes.max),
    tiprel_1mes: r() < 0.9 ? pick(['A', 'I']) : cat('tiprel_1mes'),
    indresi: cat('indresi', 'S', 0.99),
    indext: cat('indext', 'N', 0.95),
    conyuemp: cat('conyuemp', 'N', 0.999),
    canal_entrada: r() < 0.01 ? 'KZZ' : cat('canal_entrada', 'KAT', 0.3), // KZZ: unseen, accepted
    indfall: cat('indfall', 'N', 0.998),
    tipodom: 1,
    cod_prov: int(1, f.cod_prov.max),
    nomprov: cat('nomprov', 'MADRID', 0.3),
    ind_actividad_cliente: r() < 0.5 ? 1 : 0,
    renta: r() < 0.18 ? null : clamp('renta', Math.round(100 * Math.exp(11.5 + 0.6 * normal())) / 100),
    segmento: cat('segmento'),
  };
  if (rec.renta === null && r() < 0.5) delete rec.renta;              // nullable: null or absent
  if (r() < 0.05) rec.age = ` ${rec.age}`;                           // the Kaggle CSV's " 56"
  if (r() < 0.02) rec.antiguedad = rec.antiguedad + 0.0;             // 256.0 is an integer too
  return rec;
}

// JSON bodies, built once and shared by every VU.
const records = new SharedArray('santander records', function () {
  const r = mulberry32(parseInt(__ENV.POOL_SEED || '20240611', 10));
  const out = golden.map((g) => JSON.stringify(g.record));
  const n = parseInt(__ENV.POOL_SIZE || '5000', 10);
  for (let i = 0; i < n; i++) out.push(JSON.stringify(makeRecord(r)));
  return out;
});

// Iris rows of train.json, sent as records (by name) to the trained model.
const irisColumns = trainSet.columns;
const irisRows = trainSet.features;

function randomRecord() {
  return records[Math.floor(Math.random() * records.length)];
}

function irisRecord() {
  const row = irisRows[Math.floor(Math.random() * irisRows.length)];
  const rec = {};
  irisColumns.forEach((c, i) => { rec[c] = Math.round((row[i] + (Math.random() - 0.5) * 0.4) * 10) / 10; });
  return rec;
}

// --- Clients --------------------------------------------------------------------------------
export function clientHeaders(client) {
  const c = client === undefined ? Math.floor(Math.random() * CLIENTS) : client;
  const h = { 'Content-Type': 'application/json' };
  if (typeof c === 'string') h['x-api-key'] = c;
  else if (c % 5 === 4) h['x-api-key'] = `loadtest-client-${c}`;
  else h['X-Forwarded-For'] = `10.${(c >> 16) & 255}.${(c >> 8) & 255}.${c & 255}`;
  return h;
}

// --- Setup: train the iris model (seed 2's request, with a name) -----------------------------
export function trainModel(name, timeoutSeconds) {
  const headers = { 'Content-Type': 'application/json' };
  if (ADMIN_API_KEY) headers.Authorization = `Bearer ${ADMIN_API_KEY}`;
  const body = JSON.stringify(Object.assign({}, trainSet, { name: name || TRAINED_NAME }));
  const res = http.post(`${BASE_URL}/models`, body, { headers, tags: { kind: 'setup', name: 'POST /models' } });
  if (res.status !== 201) {
    fail(`POST /models: ${res.status} ${res.body} (set ADMIN_API_KEY when the server requires one)`);
  }
  const id = res.json('model_id');
  const deadline = Date.now() + 1000 * (timeoutSeconds || 120);
  for (;;) {
    const st = http.get(`${BASE_URL}/models/${id}`, { tags: { kind: 'setup', name: 'GET /models/{id}' } });
    const status = st.status === 200 ? st.json('status') : `HTTP ${st.status}`;
    if (status === 'ready') break;
    if (status === 'failed') fail(`training ${id} failed: ${st.body}`);
    if (Date.now() > deadline) fail(`training ${id} not ready after ${timeoutSeconds}s (last: ${status})`);
    sleep(0.2);
  }
  return { modelId: id, modelName: name || TRAINED_NAME };
}

// Waits until every replica behind BASE_URL can score with the trained model by name (the
// alias reaches each replica through pub/sub within about a second).
export function setupTraffic() {
  if (!TRAIN) return { startedAt: Date.now() };
  const model = trainModel();
  const deadline = Date.now() + 15000;
  let ok = 0;
  while (ok < 10) {
    const res = http.post(`${BASE_URL}/models/${model.modelName}/predict`, JSON.stringify(irisRecord()),
      { headers: clientHeaders('loadtest-setup'), tags: { kind: 'setup', name: 'POST /models/{model}/predict' } });
    ok = res.status === 200 ? ok + 1 : 0;
    if (Date.now() > deadline) fail(`${model.modelName} is not served by every replica: ${res.status} ${res.body}`);
  }
  return Object.assign(model, { startedAt: Date.now() });
}

// --- Invalid requests: each must get its status and error code -------------------------------
const INVALID = [
  { status: 422, code: 'validation', make: () => invalidRecord((o) => { o.sexo = 'X'; }) },
  { status: 422, code: 'validation', make: () => invalidRecord((o) => { o.age = 200; }) },
  { status: 422, code: 'validation', make: () => invalidRecord((o) => { delete o.age; }) },
  { status: 422, code: 'validation', make: () => ({ path: '/predict', body: `[${randomRecord()},${JSON.stringify(Object.assign(JSON.parse(randomRecord()), { segmento: 'VIP' }))}]` }) },
  { status: 400, code: 'malformed_json', make: () => ({ path: '/predict', body: randomRecord().slice(0, 40) }) },
  { status: 415, code: 'unsupported_media_type', make: () => ({ path: '/predict', body: randomRecord(), contentType: 'text/plain' }) },
  { status: 404, code: 'not_found', make: () => ({ path: `/models/no-such-model-${Math.floor(Math.random() * 1e6)}/predict`, body: randomRecord(), name: 'POST /models/{model}/predict' }) },
  { status: 422, code: 'validation', needsModel: true, make: (d) => ({ method: 'GET', path: `/models/${d.modelId}?sepal_length=5.1&sepal_width=3.5`, name: 'GET /models/{id}?...' }) },
  // Only when the server requires the admin key (without one this would train a model).
  { status: 401, code: 'unauthorized', needsKey: true, make: () => ({ path: '/models', body: JSON.stringify(trainSet), name: 'POST /models' }) },
].filter((v) => (!v.needsKey || ADMIN_API_KEY) && (!v.needsModel || TRAIN));

function invalidRecord(mutate) {
  const o = JSON.parse(randomRecord());
  mutate(o);
  return { path: '/predict', body: JSON.stringify(o) };
}

// --- One request ----------------------------------------------------------------------------
function pickKind(mix) {
  let x = Math.random() * 100;
  for (const k of Object.keys(mix)) {
    x -= mix[k];
    if (x < 0) return k;
  }
  return Object.keys(mix)[0];
}

export const KINDS = ['single', 'top_k', 'batch', 'trained_post', 'trained_get', 'invalid']
  .filter((k) => TRAIN || !k.startsWith('trained_'));

// request(data, opts): opts.mix (weights), opts.roundRobin (kinds and invalid variants in turn:
// the smoke test covers every one), opts.client (a fixed client), opts.expect429 (a 429 is an
// expected answer: the spike test's greedy client), opts.tags.
export function request(data, opts) {
  const o = opts || {};
  const n = exec.scenario.iterationInTest;
  const kind = o.roundRobin ? KINDS[n % KINDS.length] : pickKind(o.mix || MIXES[__ENV.MIX || 'realistic']);
  const headers = clientHeaders(o.client);
  const verify = o.roundRobin || CHECK_EVERY <= 1 || n % CHECK_EVERY === 0;
  const tags = Object.assign({ kind }, o.tags || {});
  const expected = o.expect429 ? http.expectedStatuses(200, 429) : null;
  let res;
  let rows = 1;
  let checks = {};

  if (kind === 'invalid') {
    const v = o.roundRobin ? INVALID[Math.floor(n / KINDS.length) % INVALID.length] : INVALID[Math.floor(Math.random() * INVALID.length)];
    const req = v.make(data);
    if (req.contentType) headers['Content-Type'] = req.contentType;
    if (req.method === 'GET') delete headers['Content-Type'];
    tags.name = req.name || `POST ${req.path}`;
    tags.expected_status = String(v.status);
    const params = { headers, tags, responseCallback: o.expect429 ? http.expectedStatuses(v.status, 429) : http.expectedStatuses(v.status) };
    res = req.method === 'GET' ? http.get(`${BASE_URL}${req.path}`, params) : http.post(`${BASE_URL}${req.path}`, req.body, params);
    checks[`invalid: ${v.status} ${v.code}`] = (r) => r.status === v.status && (!verify || errorCode(r) === v.code);
  } else {
    const params = { headers, tags };
    if (expected) params.responseCallback = expected;
    if (kind === 'single' || kind === 'top_k') {
      tags.name = kind === 'top_k' ? 'POST /predict?top_k' : 'POST /predict';
      res = http.post(`${BASE_URL}/predict${kind === 'top_k' ? '?top_k=3' : ''}`, randomRecord(), params);
    } else if (kind === 'batch') {
      rows = [2, 4, 8, 16, 32][Math.floor(Math.random() * 5)];
      const body = [];
      for (let i = 0; i < rows; i++) body.push(randomRecord());
      tags.name = 'POST /predict [batch]';
      res = http.post(`${BASE_URL}/predict`, `[${body.join(',')}]`, params);
    } else if (kind === 'trained_post') {
      const byName = Math.random() < 0.5;
      tags.name = 'POST /models/{model}/predict';
      res = http.post(`${BASE_URL}/models/${byName ? data.modelName : data.modelId}/predict`, JSON.stringify(irisRecord()), params);
    } else {
      const q = Object.entries(irisRecord()).map(([k, v]) => `${k}=${v}`).join('&');
      tags.name = 'GET /models/{id}?...';
      delete headers['Content-Type'];
      res = http.get(`${BASE_URL}/models/${data.modelId}?${q}`, params);
    }
    const label = `${kind}: 200`;
    checks[label] = (r) => r.status === 200 || (o.expect429 && r.status === 429);
    if (verify && res.status === 200) checks[`${kind}: body`] = (r) => bodyOk(kind, r, rows);
  }
  if (res.status >= 500) serverErrors.add(1, tags);
  if (res.status === 429) rateLimited.add(1, tags);
  check(res, checks, tags);
  return res;
}

function errorCode(r) {
  try {
    return r.json('error.code');
  } catch (e) {
    return undefined;
  }
}

function bodyOk(kind, r, rows) {
  let b;
  try {
    b = r.json();
  } catch (e) {
    return false;
  }
  if (kind === 'trained_get') return typeof b.predicted_class === 'number' && typeof b.probabilities === 'object';
  const width = kind === 'trained_post' ? 3 : card.labels.length;
  if (!Array.isArray(b.predictions) || b.predictions.length !== rows) return false;
  for (const p of b.predictions) {
    if (!Array.isArray(p) || p.length !== width) return false;
    const sum = p.reduce((a, x) => a + x, 0);
    if (Math.abs(sum - 1) > 1e-3) return false;
  }
  if (kind === 'top_k' && !(Array.isArray(b.top_k) && b.top_k[0].length === 3)) return false;
  if (kind !== 'trained_post' && r.headers['X-Model-Name'] !== 'santander') return false;
  return true;
}

// --- Summary helpers ------------------------------------------------------------------------
export const TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

// Sub-metrics per request kind appear in the summary only when a threshold names them; these
// always hold and are there for the report.
export function perKindThresholds(scenario) {
  const t = {};
  const sel = scenario ? `,scenario:${scenario}` : '';
  for (const k of KINDS) {
    t[`http_req_duration{kind:${k}${sel}}`] = ['max>=0'];
    t[`http_reqs{kind:${k}${sel}}`] = ['count>=0'];
  }
  return t;
}

// Prometheus (PROM_URL) instant and range queries, for the soak test's teardown.
export function promQuery(expr, time) {
  const res = http.get(`${PROM_URL}/api/v1/query?query=${encodeURIComponent(expr)}${time ? `&time=${time}` : ''}`,
    { tags: { kind: 'prometheus' } });
  if (res.status !== 200) fail(`Prometheus query ${expr}: ${res.status} ${res.body}`);
  return res.json('data.result');
}

export function promRange(expr, start, end, step) {
  const res = http.get(`${PROM_URL}/api/v1/query_range?query=${encodeURIComponent(expr)}&start=${start}&end=${end}&step=${step}`,
    { tags: { kind: 'prometheus' } });
  if (res.status !== 200) fail(`Prometheus query ${expr}: ${res.status} ${res.body}`);
  return res.json('data.result');
}
