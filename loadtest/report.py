#!/usr/bin/env python3
"""Prints the figures that matter from a k6 summary export (`k6 run --summary-export`).

Usage: loadtest/report.py TEST SUMMARY.json   (scripts/loadtest.sh calls it)

For every test: requests, error ratio, latency (p50/p95/p99/max) overall and per request kind,
and every threshold with its result. Then, per test:
  compressed  throughput while the scenario ran and minutes per 1,000,000 requests
  stress      one line per step (target and achieved rate, errors, p95, p99) and the knee:
              the highest step whose achieved rate is >= 95 % of its target with errors < 0.1 %,
              p95 < 50 ms and p99 < 100 ms
  spike       latency per phase, 429s of the greedy client
Standard library only.
"""
import json
import re
import sys

SLO_P95, SLO_P99, SLO_ERRORS = 50.0, 100.0, 0.001


def main():
    test, path = sys.argv[1], sys.argv[2]
    m = json.load(open(path))["metrics"]

    def get(name, key, default=None):
        return m.get(name, {}).get(key, default)

    reqs = get("http_reqs", "count", 0)
    failed = get("http_req_failed", "passes", 0)
    print(f"\n== {test}: {reqs} requests, {failed} unexpected answers "
          f"({100.0 * failed / max(reqs, 1):.3f} %), {get('server_errors', 'count', 0)} 5xx, "
          f"{get('rate_limited', 'count', 0)} 429, {get('dropped_iterations', 'count', 0)} requests k6 could "
          f"not start on schedule (dropped_iterations)")
    lat = [k for k in m if k.startswith("http_req_duration{scenario:")] or ["http_req_duration"]
    for k in lat:
        d = m[k]
        print(f"   latency {k[len('http_req_duration'):] or '(all)'}: p50 {d['med']:.2f} ms, p95 {d['p(95)']:.2f} ms, "
              f"p99 {d['p(99)']:.2f} ms, max {d['max']:.1f} ms")
    kinds = sorted(k[len("http_req_duration{kind:"):].split(",")[0].rstrip("}")
                   for k in m if k.startswith("http_req_duration{kind:"))
    for kind in kinds:
        dk = next(v for k, v in m.items() if k.startswith(f"http_req_duration{{kind:{kind}"))
        nk = next((v["count"] for k, v in m.items() if k.startswith(f"http_reqs{{kind:{kind}")), 0)
        print(f"   {kind:<13} {nk:>8} requests  p50 {dk['med']:7.2f} ms  p95 {dk['p(95)']:7.2f} ms  "
              f"p99 {dk['p(99)']:7.2f} ms")

    if test == "compressed":
        clock = m.get("scenario_clock_s")
        n = sum(v["count"] for k, v in m.items() if k.startswith("http_reqs{kind:"))
        if clock and clock["max"] > clock["min"]:
            secs = clock["max"] - clock["min"]
            rate = n / secs
            print(f"   compressed: {n} requests in {secs:.1f} s = {rate:.0f} requests/s "
                  f"-> {1e6 / rate / 60:.1f} minutes per 1,000,000 requests "
                  f"(a day of 1M requests at this pace; the peak rate of 116 req/s is "
                  f"{100 * 116 / rate:.0f} % of it)")

    if test == "stress":
        steps = sorted(int(k[len("http_reqs{stage:"):-1]) for k in m if re.match(r"http_reqs\{stage:\d+\}$", k))
        secs = float(m.get("stress_step_seconds", {}).get("value", 30))
        knee, broken_at = None, None
        print(f"   step (req/s)  achieved  errors %     p95 ms     p99 ms   ({secs:.0f} s per step)")
        for r in steps:
            c = m[f"http_reqs{{stage:{r}}}"]["count"]
            e = m.get(f"http_req_failed{{stage:{r}}}", {}).get("value", 0.0)
            d = m[f"http_req_duration{{stage:{r}}}"]
            achieved = c / secs
            ok = achieved >= 0.95 * r and e < SLO_ERRORS and d["p(95)"] < SLO_P95 and d["p(99)"] < SLO_P99
            if ok and broken_at is None:
                knee = r
            elif not ok and broken_at is None:
                broken_at = r
            print(f"   {r:>12} {achieved:>9.0f} {100 * e:>9.3f} {d['p(95)']:>10.2f} {d['p(99)']:>10.2f}"
                  f"  {'ok' if ok else 'over the SLO'}")
        if knee:
            print(f"   knee: {knee} requests/s, the last step within the SLO (p95 < 50 ms, p99 < 100 ms, "
                  f"errors < 0.1 %, achieved >= 95 % of the target){f'; {broken_at} requests/s is over it' if broken_at else ''}")
        else:
            print("   knee: below the first step")

    if test == "spike":
        for ph in ("before", "burst", "after"):
            d = m.get(f"http_req_duration{{phase:{ph}}}")
            if d:
                print(f"   phase {ph:<6}: p50 {d['med']:.2f} ms, p95 {d['p(95)']:.2f} ms, p99 {d['p(99)']:.2f} ms, max {d['max']:.1f} ms")
        g = get("http_reqs{scenario:greedy}", "count", 0)
        g429 = get("rate_limited{scenario:greedy}", "count", 0)
        print(f"   greedy client: {g} requests, {g429} answered 429 ({100.0 * g429 / max(g, 1):.0f} %)")

    if test == "soak":
        g = m.get("soak_rss_growth_pct", {})
        print(f"   RSS growth per replica (end vs after warm-up): max {g.get('max', float('nan')):.1f} %; "
              f"largest RSS {get('soak_rss_max_mb', 'max', float('nan')):.1f} MiB; server-side p99 drift "
              f"{get('soak_p99_drift_ms', 'max', float('nan')):+.1f} ms; 5xx in the second half: "
              f"{get('soak_5xx_second_half', 'count', 0)}")

    broken = []
    print("   thresholds:")
    for name, v in sorted(m.items()):
        for expr, crossed in v.get("thresholds", {}).items():
            if expr in ("max>=0", "count>=0", "rate>=0"):
                continue   # only there to put a sub-metric in the summary
            print(f"     {'FAILED' if crossed else 'ok    '} {name}: {expr}")
            if crossed:
                broken.append(f"{name}: {expr}")
    print(f"== {test}: {'FAILED: ' + '; '.join(broken) if broken else 'all thresholds passed'}")


if __name__ == "__main__":
    main()
