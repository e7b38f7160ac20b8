"""The dashboard's page of queries against POST /api/v1/query, for
scripts/bench-query. Each page is the analytics dashboard's queries for one
tenant and a range (the same list dashboard/src/app.js sends: KPIs now and
before, the series, vitals, every visit panel in one `breakdowns` query, and
the per-event panels; the visit panels first, the heaviest), fired six at a
time as a browser does; tenants rotate, so the engine's 5 s cache of
identical queries does not answer them. Prints one JSON line of figures.

usage: query_load.py PORT TENANTS_FILE PAGES [RANGE]
"""

import http.client
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

PV = ["is", "event:type", ["pageview"]]
KPIS = ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]
VITALS = ["lcp_p75", "inp_p75", "cls_p75", "fcp_p75", "ttfb_p75"]
VISIT_DIMENSIONS = ["visit:entry_page", "visit:exit_page", "visit:source", "visit:referrer",
                    "visit:utm_source", "visit:utm_medium", "visit:utm_campaign", "visit:browser",
                    "visit:os", "visit:device"]
PANELS = [
    ("event:page", ["visitors", "pageviews"], [PV]),
    ("event:name", ["events", "visitors"], [["is", "event:type", ["custom"]]]),
    ("event:selector", ["clicks"], [["is", "event:type", ["click"]]]),
    ("event:page", ["scroll_depth"], [["is", "event:type", ["scroll"]]]),
]


def page(range_):
    """The page's queries, named."""
    day = 86400
    now = int(time.time()) // 3600 * 3600
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    prev = [iso(now - 60 * day), iso(now - 30 * day)]
    qs = [
        # Sent first, as the dashboard does: the heaviest query.
        ("visit_panels", {"metrics": ["visits", "visitors", "bounce_rate"], "date_range": range_,
                          "breakdowns": VISIT_DIMENSIONS, "order_by": [["visits", "desc"]], "limit": 10}),
        ("kpis", {"metrics": KPIS, "date_range": range_}),
        ("kpis_previous", {"metrics": KPIS, "date_range": prev}),
        ("series", {"metrics": ["visitors", "pageviews"], "date_range": range_,
                    "dimensions": ["time:day"], "filters": [PV]}),
        ("vitals", {"metrics": VITALS, "date_range": range_}),
    ]
    for dim, metrics, filters in PANELS:
        qs.append((f"{dim}:{metrics[0]}", {
            "metrics": metrics, "date_range": range_, "dimensions": [dim],
            "filters": filters, "order_by": [[metrics[0], "desc"]], "limit": 10}))
    return qs


class Client:
    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, auth, body):
        data = json.dumps(body).encode()
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.conn.request("POST", "/api/v1/query", data,
                                  {"Authorization": auth, "Content-Type": "application/json"})
                r = self.conn.getresponse()
                r.read()
                return r.status
            except (http.client.HTTPException, OSError):
                self.conn = None
        return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else 0


def main():
    port, tenants_file, pages = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    range_ = sys.argv[4] if len(sys.argv) > 4 else "30d"
    tenants = [line.split() for line in open(tenants_file) if line.strip()]
    pool = ThreadPoolExecutor(6)
    clients = {}

    def run(args):
        name, auth, body = args
        import threading
        c = clients.setdefault(threading.get_ident(), Client(port))
        t = time.perf_counter()
        status = c.post(auth, body)
        return name, status, (time.perf_counter() - t) * 1000

    page_ms, by_query, realtime_ms, statuses = [], {}, [], {}
    for i in range(pages):
        tid, key = tenants[i % len(tenants)]
        auth = f"Bearer {tid}:{key}"
        t = time.perf_counter()
        results = list(pool.map(run, [(n, auth, b) for n, b in page(range_)]))
        page_ms.append((time.perf_counter() - t) * 1000)
        for name, status, ms in results:
            by_query.setdefault(name, []).append(ms)
            statuses[status] = statuses.get(status, 0) + 1
        _, status, ms = run(("realtime", auth, {"metrics": ["visitors"], "date_range": "realtime"}))
        realtime_ms.append(ms)
        statuses[status] = statuses.get(status, 0) + 1
    heaviest = max(by_query, key=lambda n: pct(by_query[n], 50))
    print(json.dumps({
        "pages": pages,
        "queries_per_page": len(page(range_)),
        "page_p50_ms": round(pct(page_ms, 50), 1),
        "page_p99_ms": round(pct(page_ms, 99), 1),
        "heaviest": heaviest,
        "heaviest_p50_ms": round(pct(by_query[heaviest], 50), 1),
        "heaviest_p99_ms": round(pct(by_query[heaviest], 99), 1),
        "realtime_p50_ms": round(pct(realtime_ms, 50), 1),
        "realtime_p99_ms": round(pct(realtime_ms, 99), 1),
        "statuses": statuses,
        "p50_ms_by_query": {n: round(pct(v, 50), 1) for n, v in sorted(by_query.items(), key=lambda kv: -pct(kv[1], 50))},
    }))


if __name__ == "__main__":
    main()
