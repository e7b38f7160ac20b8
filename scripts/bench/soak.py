"""Sampler and plotter for scripts/soak.

  soak.py sample CSV EDGE_PORT SINK_PORT PIDFILE_EDGE PIDFILE_SINK STOPFILE
      every 10 s until STOPFILE exists, one CSV row: per process (edge,
      sink) RSS, open files and threads; the edge's ring depth, accepted
      and rejected events, request p50/p99 over the last 10 s (from the
      latency histogram's buckets); the sink's rows inserted, group lag and
      event lag p99. The sink's pid is re-read each time (it restarts).
  soak.py plot CSV PNG
      four panels over time: memory, open files and threads, latency,
      throughput and lag.
"""

import csv
import os
import sys
import time
import urllib.request

INTERVAL = 10.0

FIELDS = [
    "t_s", "edge_rss_mib", "edge_fds", "edge_threads", "sink_rss_mib", "sink_fds",
    "sink_threads", "ring_depth", "accepted_total", "rejected_total", "events_per_s",
    "p50_ms", "p99_ms", "sink_rows_total", "sink_group_lag", "sink_event_lag_p99_s",
]


def proc(pid):
    """RSS in MiB, open files and threads of pid, or blanks."""
    try:
        status = open(f"/proc/{pid}/status").read().splitlines()
        rss = next(int(l.split()[1]) for l in status if l.startswith("VmRSS:")) / 1024
        threads = next(int(l.split()[1]) for l in status if l.startswith("Threads:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return round(rss, 1), fds, threads
    except (OSError, StopIteration, ValueError):
        return "", "", ""


def metrics(port):
    """Prometheus text of /metrics as {name_with_labels: value}."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def summed(m, prefix):
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def buckets(m, name):
    """Cumulative (le, count) pairs of a histogram, sorted by le."""
    out = []
    for k, v in m.items():
        if k.startswith(name + '_bucket{le="'):
            le = k[len(name) + 12:-2]
            out.append((float("inf") if le == "+Inf" else float(le), v))
    return sorted(out)


def quantile(now, before, q):
    """The q-quantile (upper bucket bound, ms) of what the histogram
    counted between two samples."""
    prev = dict(before)
    delta = [(le, c - prev.get(le, 0)) for le, c in now]
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return ""
    for le, c in delta:
        if c >= q * total:
            return round(le * 1000, 2) if le != float("inf") else ""
    return ""


def pid_of(path):
    try:
        return int(open(path).read().strip())
    except (OSError, ValueError):
        return None


def sample(path, edge_port, sink_port, edge_pidfile, sink_pidfile, stopfile):
    start = time.time()
    prev_hist, prev_accepted, prev_t = [], None, None
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        while not os.path.exists(stopfile):
            t = time.time()
            e, s = metrics(edge_port), metrics(sink_port)
            hist = buckets(e, "ingest_request_latency_hist_seconds")
            accepted = summed(e, "ingest_events_accepted_total")
            rate = ""
            if prev_accepted is not None and t > prev_t:
                rate = round((accepted - prev_accepted) / (t - prev_t))
            w.writerow([
                round(t - start), *proc(pid_of(edge_pidfile)), *proc(pid_of(sink_pidfile)),
                int(summed(e, "ingest_ring_depth")), int(accepted),
                int(summed(e, "ingest_events_rejected_total")), rate,
                quantile(hist, prev_hist, 0.5), quantile(hist, prev_hist, 0.99),
                int(s.get("sink_rows_inserted_total", 0)), s.get("sink_group_lag", ""),
                s.get('sink_event_lag_seconds{quantile="0.99"}', ""),
            ])
            f.flush()
            prev_hist, prev_accepted, prev_t = hist, accepted, t
            time.sleep(max(0.0, INTERVAL - (time.time() - t)))


def plot(path, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(path)))
    num = lambda k: [float(r[k]) if r[k] not in ("", None) else float("nan") for r in rows]
    t = [v / 60 for v in num("t_s")]
    fig, ax = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    ax[0].plot(t, num("edge_rss_mib"), label="edge RSS")
    ax[0].plot(t, num("sink_rss_mib"), label="sink RSS")
    ax[0].set_ylabel("MiB")
    ax[1].plot(t, num("edge_fds"), label="edge open files")
    ax[1].plot(t, num("sink_fds"), label="sink open files")
    ax[1].plot(t, num("edge_threads"), label="edge threads")
    ax[1].plot(t, num("sink_threads"), label="sink threads")
    ax[1].set_ylabel("count")
    ax[2].plot(t, num("p50_ms"), label="ingest p50 (10 s)")
    ax[2].plot(t, num("p99_ms"), label="ingest p99 (10 s)")
    ax[2].set_ylabel("ms (bucket bound)")
    ax[2].set_yscale("log")
    ax[3].plot(t, [v / 1000 for v in num("events_per_s")], label="accepted k events/s")
    ax[3].plot(t, [v / 1000 for v in num("sink_group_lag")], label="consumer lag, k records")
    ax[3].plot(t, num("ring_depth"), label="ring depth (records)")
    ax[3].set_xlabel("minutes")
    for a in ax:
        a.grid(True, alpha=0.3)
        a.legend(loc="upper left", fontsize=8)
    fig.suptitle("ingestion-engine soak (scripts/soak)")
    fig.tight_layout()
    fig.savefig(png, dpi=80)


if __name__ == "__main__":
    if sys.argv[1] == "sample":
        sample(*sys.argv[2:8])
    elif sys.argv[1] == "plot":
        plot(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
