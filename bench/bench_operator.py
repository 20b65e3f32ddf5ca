"""Operator scale benchmark (issue #8): N TradingStrategies on one operator against the local control plane.

For each N (default 50, 200, 500): N strategies in namespace ``bench`` (a ResourceQuota of zero
pods: the operator's Deployments exist, no trader runs), each with its own registered model,
ramping in a long shadow stage so that every strategy is analysed every ``interval``; synthetic
trader series for all of them come from one exporter scraped by the stack's Prometheus. After a
warm-up, over a measurement window it reports:

- ``query_round_s``: wall time of one round of Prometheus queries shared by all strategies
  (mean, from the operator's histogram), and ``analysis_spread_s``: max - min of the
  strategies' last analysis times within one interval (informational: each strategy's timer
  has its own phase, so analyses spread over the interval by design);
- ``queries_per_round``: Prometheus queries per evidence round (the operator's own counters);
  ``direct_query_s``: median latency of one built-in query sent by the benchmark itself (how much
  of a round is Prometheus under this load, how much the operator);
- ``apiserver_rps``: API-server requests per second by verb for tradingstrategies, deployments
  and events (``apiserver_request_total`` deltas);
- ``rss_mb``, ``cpu_percent``: the operator process, from /proc;
- ``breach_to_rollback_s``: one strategy's drawdown is raised over its cap; the time until its
  status says RolledBack (polled every 0.5 s on that one object), also in analysis intervals.

Targets at 500: query round <= 2 s, queries per round = number of built-in queries, RSS <= 250 MB,
breach -> rollback recorded <= 2 intervals. Prints a table, then one JSON line.
Usage: ``python bench/bench_operator.py [--n 50 200 500] [--interval 10] [--window 60]``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
import demo  # noqa: E402

from quantramp.operator.evidence import QUERIES  # noqa: E402

NS = "bench"
GOOD = {"pnl_usd": 100.0, "simulated_pnl_usd": 102.0, "max_drawdown_ratio": 0.005, "slippage_realized_bps": 1.1,
        "slippage_modeled_bps": 1.0, "fill_ratio": 0.99, "model_precision_ratio": 0.54, "trades_total": 30.0,
        "capital_usd": 1000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """One exporter for every strategy's synthetic series (both roles, stage shadow).

    The exposition text is rendered once per change and served as bytes, so that at 500
    strategies (9,000 series scraped every second) the benchmark's own CPU does not crowd out the
    operator it measures on a 2-core machine.
    """

    def __init__(self, stack: demo.Harness) -> None:
        self.values: dict[tuple[str, str, str], float] = {}
        self.body = b""
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's API
                body = exporter.body
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.target = stack.dir / "prometheus" / "targets" / "bench_exporter.json"
        self.target.write_text(json.dumps([{"targets": [f"127.0.0.1:{self.port}"], "labels": {"job": "bench"}}]))

    def _render(self) -> None:
        lines = [f'quantramp_{k}{{namespace="{NS}",strategy="{name}",role="{role}",stage="shadow"}} {v!r}'
                 for (name, role, k), v in self.values.items()]
        self.body = ("\n".join(lines) + "\n").encode()

    def add_all(self, names: list[str]) -> None:
        for name in names:
            for role in ("champion", "challenger"):
                for k, v in GOOD.items():
                    self.values[(name, role, k)] = v
        self._render()

    def set(self, name: str, key: str, value: float) -> None:
        self.values[(name, "challenger", key)] = value
        self._render()

    def close(self) -> None:
        self.target.unlink(missing_ok=True)
        self.server.shutdown()


def register_models(tracking: str, names: list[str]) -> None:
    s = requests.Session()
    api = f"{tracking}/api/2.0/mlflow"
    for n in names:
        s.post(f"{api}/registered-models/create", json={"name": n}, timeout=30).raise_for_status()
        for _ in range(2):
            s.post(f"{api}/model-versions/create", json={"name": n, "source": "s3://bench/none"}, timeout=30).raise_for_status()
        s.post(f"{api}/registered-models/alias", json={"name": n, "alias": "champion", "version": "1"}, timeout=30).raise_for_status()


def manifest(name: str, interval: int) -> dict:
    return {
        "apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": name, "namespace": NS},
        "spec": {"model": {"name": name, "version": "2"}, "capitalUsd": 100000, "admission": {"mode": "off"},
                 "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "1h", "maxDrawdown": 0.05},
                            {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.1, "pnlBand": 0.15}],
                 "analysis": {"interval": f"{interval}s", "criteria": {"minTrades": 5}},
                 "trader": {"command": ["sleep", "3600"]}},
    }


def scrape(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in requests.get(url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def apiserver_requests(stack: demo.Harness) -> dict[str, float]:
    """apiserver_request_total summed by verb for our resources."""
    text = stack.kubectl("get", "--raw", "/metrics").stdout
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        res = re.search(r'resource="([^"]*)"', line)
        verb = re.search(r'verb="([^"]*)"', line)
        if res and verb and res.group(1) in ("tradingstrategies", "deployments", "events"):
            out[verb.group(1)] = out.get(verb.group(1), 0.0) + float(line.rpartition(" ")[2])
    return out


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU seconds) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def statuses(stack: demo.Harness) -> dict[str, dict]:
    out = stack.kubectl("get", "ts", "-n", NS, "-o", "json")
    return {o["metadata"]["name"]: (o.get("status") or {}) for o in json.loads(out.stdout)["items"]}


def run_n(stack: demo.Harness, n: int, interval: int, window: int, tag: str) -> dict:
    names = [f"b{tag}-{n}-{i:03d}" for i in range(n)]
    exporter = Exporter(stack)
    exporter.add_all(names)
    register_models(stack.env["MLFLOW_TRACKING_URI"], names)
    metrics_port = free_port()
    env = {**stack.env, "QR_PROMETHEUS_URL": stack.env["PROMETHEUS_URL"]}
    log = open(stack.dir / "logs" / f"operator-bench-{n}.log", "ab")
    op = subprocess.Popen([str(demo.BIN / "quantramp-operator"), "--namespace", NS, "--metrics-port", str(metrics_port)],
                          env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([manifest(x, interval) for x in names]))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # warm-up: every strategy started and analysed once
            st = statuses(stack)
            if sum(1 for s in st.values() if s.get("lastAnalysis")) == n:
                break
            time.sleep(2)
        m0, a0, (rss0, cpu0), t0 = scrape(f"http://127.0.0.1:{metrics_port}/metrics"), apiserver_requests(stack), proc_stats(op.pid), time.monotonic()
        spreads, rss_peak, direct = [], rss0, []
        while time.monotonic() - t0 < window:
            tq = time.monotonic()  # one built-in query from outside the operator: Prometheus' own latency under this load
            requests.get(f"{stack.env['PROMETHEUS_URL']}/api/v1/query", params={"query": QUERIES["pnl_usd"]}, timeout=30).raise_for_status()
            direct.append(time.monotonic() - tq)
            st = statuses(stack)
            times = sorted(time.mktime(time.strptime(s["lastAnalysis"]["time"], "%Y-%m-%dT%H:%M:%SZ")) for s in st.values() if s.get("lastAnalysis"))
            if times:
                # strategies analysed within the last interval form one round; its spread is max - min
                recent = [t for t in times if t > times[-1] - interval]
                spreads.append(recent[-1] - recent[0])
            rss_peak = max(rss_peak, proc_stats(op.pid)[0])
            time.sleep(max(1.0, interval / 2))
        m1, a1, (rss1, cpu1), t1 = scrape(f"http://127.0.0.1:{metrics_port}/metrics"), apiserver_requests(stack), proc_stats(op.pid), time.monotonic()
        rounds = m1.get("quantramp_operator_evidence_rounds_total", 0) - m0.get("quantramp_operator_evidence_rounds_total", 0)
        queries = m1.get("quantramp_operator_prometheus_queries_total", 0) - m0.get("quantramp_operator_prometheus_queries_total", 0)
        # breach -> rollback recorded
        victim = names[n // 2]
        tb = time.monotonic()
        exporter.set(victim, "max_drawdown_ratio", 0.5)
        breach = None
        while time.monotonic() - tb < 10 * interval:
            s = json.loads(stack.kubectl("get", "ts", victim, "-n", NS, "-o", "json").stdout).get("status") or {}
            if s.get("phase") == "RolledBack":
                breach = time.monotonic() - tb
                break
            time.sleep(0.5)
        return {
            "n": n,
            "query_round_s": round((m1.get("quantramp_operator_evidence_round_seconds_sum", 0) - m0.get("quantramp_operator_evidence_round_seconds_sum", 0)) / rounds, 3) if rounds else None,
            "analysis_spread_s": {"median": statistics.median(spreads) if spreads else None, "max": max(spreads) if spreads else None},
            "evidence_rounds": rounds,
            "queries_per_round": round(queries / rounds, 2) if rounds else None,
            "direct_query_s": round(statistics.median(direct), 3) if direct else None,
            "builtin_queries": len(QUERIES) + 2,  # + critical alerts, + AUTO_KILL_SWITCH alerts
            "analysis_rounds_per_s": round((m1.get('quantramp_operator_analysis_round_seconds_count', 0) - m0.get('quantramp_operator_analysis_round_seconds_count', 0)) / (t1 - t0), 2),
            "apiserver_rps": {v: round((a1.get(v, 0) - a0.get(v, 0)) / (t1 - t0), 2) for v in sorted(a1)},
            "rss_mb": {"start": round(rss0, 1), "peak": round(rss_peak, 1), "end": round(rss1, 1)},
            "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "breach_to_rollback_s": None if breach is None else round(breach, 1),
            "breach_to_rollback_intervals": None if breach is None else round(breach / interval, 2),
            "interval_s": interval,
        }
    finally:
        os.killpg(op.pid, signal.SIGTERM)
        try:
            op.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(op.pid, signal.SIGKILL)
        exporter.close()
        stack.kubectl("delete", "ts", "--all", "-n", NS, "--wait=false", check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[50, 200, 500])
    ap.add_argument("--interval", type=int, default=10, help="analysis interval, seconds")
    ap.add_argument("--window", type=int, default=60, help="measurement window per N, seconds")
    args = ap.parse_args()
    stack = demo.Harness(REPO / ".local" / "bench-operator")
    stack.up(fresh=True)
    (stack.dir / "logs").mkdir(exist_ok=True)
    results = []
    try:
        stack.install_crd()
        stack.kubectl("create", "namespace", NS, check=False)
        stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods", "namespace": NS}, "spec": {"hard": {"pods": "0"}}}))
        tag = os.urandom(2).hex()
        for n in args.n:
            print(f"bench_operator: N={n} ...", file=sys.stderr, flush=True)
            results.append(run_n(stack, n, args.interval, args.window, tag))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
            time.sleep(5)
    finally:
        stack.down()
    print(f"{'N':>5} {'query round s':>14} {'q/round':>8} {'analyses/s':>11} {'RSS peak MB':>12} {'CPU %':>6} {'breach->rollback':>17}  API req/s")
    for r in results:
        print(f"{r['n']:>5} {r['query_round_s']!s:>14} {r['queries_per_round']!s:>8} {r['analysis_rounds_per_s']:>11} "
              f"{r['rss_mb']['peak']:>12} {r['cpu_percent']:>6} {str(r['breach_to_rollback_s']) + ' s (' + str(r['breach_to_rollback_intervals']) + 'x)':>17}  {r['apiserver_rps']}")
    print(json.dumps({"operator_scale": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
