#!/usr/bin/env python3
"""``make demo``: the main job end to end on the embedded local stack.

1. starts the local single-node cluster (control plane, containerd, kubelet, kube-proxy, CoreDNS),
   Redis, PostgreSQL, Prometheus, MLflow and the Slack/JIRA fakes (hack/localstack.py) in a fresh
   state directory, inside the private namespaces of hack/sandbox.sh, imports the image built from
   the Dockerfile (hack/build-image.sh) into containerd, and loads the bundled AAPL minute bars into
   PostgreSQL (table minute_bars), where the example strategies' trader pods read them;
2. trains models on real AAPL hourly bars and registers them in MLflow: for each of two
   registered models a champion v1, then a candidate v2 — a sound one for ``aapl-meanrev``
   and a deliberately bad one (shuffled labels) for ``aapl-trend``;
3. ``helm install``s the chart (the CRD, and the operator Deployment running the image under the
   chart's ServiceAccount), then ``kubectl apply -f`` the two example strategies in config/examples/;
   their trader pods run in containers of the same image under the real kubelet;
4. follows the ramps, then prints ``kubectl get tradingstrategies``, the MLflow aliases and
   ``kubectl logs`` of a trader pod;
5. halts aapl-meanrev with ``kubectl quantramp kill on`` (every pod acknowledges) and prints the
   JIRA tickets (aapl-trend's rollback post-mortem, the kill's) and the Slack messages from the
   stack's fakes; exits 0 only if aapl-meanrev is Promoted, aapl-trend RolledBack, and step 5 happened.

The stack is torn down at the end; ``--keep`` first opens a shell inside the sandbox with the
stack's environment (``kubectl``, ``kubectl quantramp``, ``helm``) for a look around.
:class:`Harness` is reused by the end-to-end tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
CRD_FILE = REPO / "crds" / "tradingstrategies.quantramp.io.yaml"
CHART = REPO / "charts" / "quantramp"
RELEASE, OPERATOR_NS = "quantramp", "quantramp-system"
#: the operator's pods (the chart's selector labels; two replicas with ha.enabled)
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
#: operator settings read from its environment (quantramp.operator.handlers) that the harness passes on
OPERATOR_TUNABLES = ("QR_TICK_SECONDS", "QR_CONVERGE_SECONDS", "QR_SHUTDOWN_GRACE_SECONDS", "QR_WORKERS",
                     "QR_KILL_EVIDENCE_SECONDS", "QR_KILL_ACK_TIMEOUT_SECONDS", "QR_KILL_ACK_ATTEMPTS",
                     "QR_STOP_ROLE_ATTEMPTS")
EXAMPLES = REPO / "config" / "examples"
#: the stack's market-data table (barsource's default), and the Secret holding its password in the strategies'
#: namespaces (named by config/examples/demo-*.yaml, allowed by the chart values below)
MARKET_TABLE, MARKET_SECRET = "minute_bars", "market-db"
#: the IB paper accounts of the champion and the challenger (keys of this Secret), at the fake IB Gateway a test
#: runs on the node address (tests/e2e/test_ib_broker.py)
IB_SECRET, IB_ACCOUNTS = "ib-accounts", {"champion": "DU111", "challenger": "DU222"}
BIN = Path(sys.executable).parent

# (registered model, role, trainer options); order matters: v1 then v2 of each model.
DEMO_MODELS = [
    ("aapl-meanrev", "champion", ["--kind", "logistic", "--seed", "1", "--alias", "champion"]),
    ("aapl-meanrev", "candidate", ["--kind", "logistic", "--seed", "2"]),
    ("aapl-trend", "champion", ["--kind", "logistic", "--seed", "1", "--alias", "champion"]),
    ("aapl-trend", "candidate", ["--kind", "forest", "--shuffle-labels", "--seed", "7"]),
]
EXPECTED = {"aapl-meanrev": "Promoted", "aapl-trend": "RolledBack"}
TERMINAL = {"Promoted", "RolledBack", "Aborted", "Failed"}


def say(msg: str) -> None:
    """Print a progress line with a timestamp."""
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_for(pred, what: str, timeout: float = 300):
    """Call ``pred()`` every second until it returns something truthy, and return that; after ``timeout`` seconds
    raise AssertionError naming ``what`` and the last value (for the e2e tests)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last {last!r}")


class Harness:
    """Drives the local stack, kubectl, the trainer and the operator for the demo and the e2e tests."""

    def __init__(self, stack_dir: Path) -> None:
        self.dir = Path(stack_dir)
        self.env: dict[str, str] = {}
        self.market_rows = 0  # bars of AAPL in the stack's PostgreSQL (loaded by ``up``)
        self.operator_namespaces: tuple[str, ...] | None = None  # what the installed release watches

    # --- stack --------------------------------------------------------------------------
    def up(self, fresh: bool = False) -> None:
        """Start (or reuse) the stack; ``fresh`` stops and wipes an earlier one in the same dir."""
        if fresh and self.dir.exists():
            subprocess.run([sys.executable, str(HACK / "localstack.py"), "down", "--dir", str(self.dir)], check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
        subprocess.run([sys.executable, str(HACK / "localstack.py"), "up", "--dir", str(self.dir)], check=True)
        self.env = {**os.environ, **read_env_file(self.dir / "env")}
        self.env["PATH"] = f"{BIN}:{self.env.get('PATH', '')}"
        self.market_rows = self.load_market_data()

    def load_market_data(self, symbol: str = "AAPL") -> int:
        """Load the bundled sample's minute bars of ``symbol`` into the stack's PostgreSQL (table
        minute_bars, where the example strategies' pods read them); idempotent. Returns the table's
        row count for ``symbol``."""
        import psycopg

        from quantramp.trader import barsource, marketdata

        with psycopg.connect(self.env["QR_MARKET_DB_DSN"], password=self.env["QR_MARKET_DB_PASSWORD"]) as conn:
            barsource.create_schema(conn, MARKET_TABLE)
            barsource.load_frame(conn, MARKET_TABLE, symbol, marketdata.load_minute_bars(symbol))
            return conn.execute(f"SELECT COUNT(*) FROM {MARKET_TABLE} WHERE symbol = %s", (symbol,)).fetchone()[0]

    def down(self) -> None:
        """Stop every part of the stack (the operator's pod goes with the node)."""
        self.operator_namespaces = None
        subprocess.run([sys.executable, str(HACK / "localstack.py"), "down", "--dir", str(self.dir)], check=False)

    # --- tools --------------------------------------------------------------------------
    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Run the stack's kubectl; returns the completed process (text output)."""
        return subprocess.run(
            ["kubectl", *args], env=self.env, input=stdin, text=True, capture_output=True, check=check
        )

    def train(self, model: str, options: list[str]) -> str:
        """Train and register a model version with ``quantramp-trader train``; returns the version."""
        out = subprocess.run(
            [str(BIN / "quantramp-trader"), "train", "--model-name", model, *options],
            env=self.env,
            text=True,
            capture_output=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"training {model} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout.strip().splitlines()[-1].strip()

    def install_crd(self) -> None:
        """Apply the generated CRD and wait until it is Established (up to 3 x 60 s: a freshly started
        API server on a loaded 2-core machine can be slow to compile its validation rules); raises
        RuntimeError with kubectl's own words otherwise."""
        self.kubectl("apply", "-f", str(CRD_FILE))
        errors = []
        for _ in range(3):
            out = self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/tradingstrategies.quantramp.io",
                               check=False)
            if out.returncode == 0:
                return
            errors.append((out.stdout + out.stderr).strip())
            time.sleep(2)
        raise RuntimeError(f"the TradingStrategy CRD is not Established: {errors}")

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the stack's helm (built with the control plane); returns the completed process."""
        out = subprocess.run(["helm", *args], env=self.env, text=True, capture_output=True)
        if check and out.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:2])} failed:\n{out.stdout}\n{out.stderr}")
        return out

    def start_operator(self, namespaces: tuple[str, ...] = ("default",)) -> None:
        """``helm install`` the chart: the CRD, and the operator Deployment (the image built from the
        Dockerfile, under the chart's ServiceAccount) watching ``namespaces`` (other namespaces stay
        free for tests that drive the handlers in-process). Slack and JIRA are the stack's fakes, their
        credentials in Secrets, as the operator's Redis password (Secret quantramp-redis) and the key of the
        per-strategy Redis passwords (Secret quantramp-redis-acl): no credential is a
        chart value. Returns once the operator pod is Ready; raises RuntimeError otherwise."""
        if self.operator_namespaces == tuple(namespaces):
            return
        e = self.env
        for ns in (OPERATOR_NS, *namespaces):  # Pod Security "restricted" enforced where quantramp runs pods
            self.kubectl("create", "namespace", ns, check=False)
            self.kubectl("label", "--overwrite", "namespace", ns,
                         *(f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn", "audit")))
        for name, pairs in (("quantramp-slack", {"bot-token": e["QR_SLACK_BOT_TOKEN"]}),
                            ("quantramp-jira", {"token": e["QR_JIRA_TOKEN"]}),
                            ("quantramp-redis", {"password": e["QR_REDIS_PASSWORD"]}),
                            ("quantramp-redis-acl", {"key": e["QR_REDIS_ACL_KEY"]})):
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": name, "namespace": OPERATOR_NS}, "stringData": pairs}
            self.kubectl("apply", "-f", "-", stdin=json.dumps(secret))  # on stdin: never in a process listing
        for ns in namespaces:  # the market-data password, where the strategies' pods run
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": MARKET_SECRET, "namespace": ns},
                      "stringData": {"password": e["QR_MARKET_DB_PASSWORD"]}}
            self.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": IB_SECRET, "namespace": ns}, "stringData": IB_ACCOUNTS}
            self.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
        values = {
            "image": {"repository": "quantramp", "tag": "dev", "pullPolicy": "IfNotPresent"},
            "prometheusUrl": e["QR_POD_PROMETHEUS_URL"],
            "mlflowTrackingUri": e["QR_POD_MLFLOW_TRACKING_URI"],
            "redis": {"url": e["QR_POD_REDIS_URL"], "existingSecret": "quantramp-redis", "passwordKey": "password",
                      "aclKeySecret": "quantramp-redis-acl", "aclKeyKey": "key"},
            "watchNamespaces": list(namespaces),
            "podMonitor": {"enabled": False},  # this cluster's Prometheus scrapes by pod annotation
            # one standalone replica on this 2-core node (tests/e2e/test_ha.py upgrades to the chart's two)
            "ha": {"enabled": False},
            # the market-data password of the example strategies (and of tests/e2e/test_admission_policy.py)
            # and the fake IB Gateway a test may run on the node address, with its accounts' Secret
            "admission": {"allowedMarketDataSecrets": [MARKET_SECRET], "allowedBrokerHosts": [e["QR_NODE_IP"]],
                          "allowedBrokerSecrets": [IB_SECRET]},
            "slack": {"channel": e["QR_SLACK_CHANNEL"], "secretName": "quantramp-slack",
                      "baseUrl": e["QR_POD_SLACK_BASE_URL"]},
            "jira": {"url": e["QR_POD_JIRA_URL"], "project": e["QR_JIRA_PROJECT"], "secretName": "quantramp-jira"},
        }
        # the operator's tunables a caller set in this harness's env reach the pod (the chart's extraEnv)
        values["extraEnv"] = [{"name": k, "value": v} for k, v in sorted(e.items()) if k in OPERATOR_TUNABLES]
        values_file = self.dir / "operator-values.json"
        values_file.write_text(json.dumps(values, indent=2))
        self.helm("upgrade", "--install", RELEASE, str(CHART), "-n", OPERATOR_NS, "-f", str(values_file),
                  "--wait", "--timeout", "180s")
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/tradingstrategies.quantramp.io")
        self.operator_namespaces = tuple(namespaces)

    def stop_operator(self) -> None:
        """``helm uninstall`` the operator (the CRD, kept by Helm, and the strategies stay)."""
        if self.operator_namespaces is not None:
            self.helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout", "60s", check=False)
        self.operator_namespaces = None

    def operator_logs(self, tail: int = 200) -> str:
        """The operator pods' logs (``kubectl logs``, every replica, each line prefixed with its pod)."""
        return self.kubectl("logs", "-n", OPERATOR_NS, "-l", OPERATOR_SELECTOR, "--prefix", f"--tail={tail}",
                            "--max-log-requests=10", check=False).stdout

    def operator_pods(self) -> list[dict]:
        """The operator's pods (``kubectl get pods``, raw JSON), Running or not."""
        out = self.kubectl("get", "pods", "-n", OPERATOR_NS, "-l", OPERATOR_SELECTOR, "-o", "json")
        return json.loads(out.stdout)["items"]

    def strategies(self, namespace: str = "default") -> dict[str, dict]:
        """All TradingStrategies in ``namespace`` as {name: object}."""
        out = self.kubectl("get", "tradingstrategies", "-n", namespace, "-o", "json")
        return {o["metadata"]["name"]: o for o in json.loads(out.stdout)["items"]}

    def wait_terminal(self, names: list[str], timeout: float, namespace: str = "default") -> dict[str, str]:
        """Poll until every named strategy reaches a terminal phase and its effects have run.

        Prints each change of phase, stage or message. Returns {name: phase}.
        """
        deadline, seen = time.monotonic() + timeout, {}
        start = time.monotonic()
        while True:
            objs = self.strategies(namespace)
            phases = {}
            for name in names:
                st = objs.get(name, {}).get("status", {})
                phases[name] = st.get("phase", "")
                line = (st.get("phase"), st.get("stage"), st.get("message"))
                if seen.get(name) != line:
                    seen[name] = line
                    say(f"+{time.monotonic() - start:5.0f}s {name}: {st.get('phase')} {st.get('stage')} — {st.get('message', '')}")
            # terminal, and the transition's effects (alias moves, tags, Deployments) done
            settled = all(
                not any(e.get("state") == "Pending" for e in objs.get(n, {}).get("status", {}).get("effects", []))
                for n in names
            )
            if (settled and all(p in TERMINAL for p in phases.values())) or time.monotonic() > deadline:
                return phases
            time.sleep(2)

    def add_alert_rules(self, name: str, text: str) -> None:
        """Drop a rule file into the stack's Prometheus (DIR/prometheus/rules/NAME.yaml) and reload it."""
        import urllib.request

        (self.dir / "prometheus" / "rules" / f"{name}.yaml").write_text(text)
        urllib.request.urlopen(urllib.request.Request(f"{self.env['PROMETHEUS_URL']}/-/reload", method="POST"), timeout=10).read()

    def slack_messages(self) -> list[dict]:
        """Every message the stack's fake Slack received."""
        return self._fake_get(self.env["QR_SLACK_BASE_URL"].removesuffix("/api/") + "/_messages")

    def jira_tickets(self) -> list[dict]:
        """Every ticket in the stack's fake JIRA (with its comments)."""
        return self._fake_get(self.env["QR_JIRA_URL"] + "/_tickets")

    @staticmethod
    def _fake_get(url: str) -> list[dict]:
        import urllib.request

        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        return body if isinstance(body, list) else list(body.values())  # tickets come keyed by issue key

    def aliases(self, model: str) -> dict[str, str]:
        """MLflow aliases of ``model`` as {alias: version}."""
        from mlflow.tracking import MlflowClient

        rm = MlflowClient(self.env["MLFLOW_TRACKING_URI"]).get_registered_model(model)
        return {a: str(v) for a, v in sorted((rm.aliases or {}).items())}


def incident_drill(h: Harness) -> bool:
    """The on-call side: halt the promoted strategy with the kill switch (every pod acknowledges),
    then show the JIRA tickets the operator opened (the rolled-back strategy's post-mortem and the
    kill's) and the Slack messages it sent, from the stack's fakes. True if all of it happened."""
    good = next(n for n, p in EXPECTED.items() if p == "Promoted")
    bad = next(n for n, p in EXPECTED.items() if p == "RolledBack")
    print(f"\n$ kubectl quantramp kill on {good} --reason 'demo: on-call halt'")
    out = subprocess.run([str(BIN / "kubectl-quantramp"), "kill", "on", good, "--reason", "demo: on-call halt"],
                         env=h.env, text=True, capture_output=True)
    print(out.stdout + out.stderr, end="")
    print(f"$ kubectl quantramp kill status {good}")
    print(subprocess.run([str(BIN / "kubectl-quantramp"), "kill", "status", good], env=h.env, text=True,
                         capture_output=True).stdout, end="")
    ks = (h.strategies()[good].get("status") or {}).get("killSwitch") or {}
    deadline = time.monotonic() + 30
    tickets: list[dict] = []
    while time.monotonic() < deadline:  # the kill's ticket is the last effect of its transition
        tickets = h.jira_tickets()
        if any(good in t["fields"]["summary"] for t in tickets) and any(bad in t["fields"]["summary"] for t in tickets):
            break
        time.sleep(1)
    print(f"\nJIRA (the stack's fake): {len(tickets)} ticket(s)")
    for t in tickets:
        print(f"  {t['key']} [{t['fields'].get('priority', {}).get('name', '-')}] {t['fields']['summary']}")
    post = next((t for t in tickets if bad in t["fields"]["summary"]), None)
    if post is not None:
        print(f"\n--- {post['key']} (post-mortem template, filled by the operator) ---")
        lines = post["fields"]["description"].splitlines()
        print("\n".join(lines[:45]) + (f"\n... ({len(lines) - 45} more lines)" if len(lines) > 45 else ""))
    slack = h.slack_messages()
    print(f"\nSlack (the stack's fake): {len(slack)} message(s), e.g.")
    for m in slack[-4:]:
        print(f"  #{m.get('channel', '-')}: {m.get('text', '')[:150]}")
    return bool(out.returncode == 0 and ks.get("engaged") and ks.get("acks") and post is not None
                and any(good in t["fields"]["summary"] for t in tickets))


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``export K=V`` / ``K=V`` lines (values may be shell-quoted)."""
    import shlex

    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value else [""]
        env[key] = parts[0] if parts else ""
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(REPO / ".local" / "demo"), help="stack state directory")
    parser.add_argument("--keep", action="store_true", help="open a shell in the sandbox before tearing down")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for both ramps")
    args = parser.parse_args(argv)
    if os.environ.get("QR_SANDBOX") != "1":  # the node lives in hack/sandbox.sh's private namespaces
        os.execv(str(HACK / "sandbox.sh"), [str(HACK / "sandbox.sh"), "--", sys.executable, __file__,
                                             *(argv if argv is not None else sys.argv[1:])])
    t0 = time.monotonic()
    h = Harness(Path(args.dir))
    try:
        say(f"starting the local stack in {args.dir}")
        h.up(fresh=True)
        say(f"stack up in {time.monotonic() - t0:.0f}s; the strategies read their bars from its PostgreSQL: "
            f"SELECT COUNT(*) FROM {MARKET_TABLE} WHERE symbol='AAPL' -> {h.market_rows} (the bundled sample)")
        for model, role, options in DEMO_MODELS:
            version = h.train(model, options)
            say(f"registered {model} v{version} ({role}: {' '.join(options)})")
        h.start_operator()
        say("operator installed with helm and Ready; applying the example strategies with kubectl")
        print(h.kubectl("get", "pods", "-n", OPERATOR_NS, "-o", "wide").stdout, end="")
        for f in ("demo-good.yaml", "demo-bad.yaml"):
            print(h.kubectl("apply", "-f", str(EXAMPLES / f)).stdout, end="")
        phases = h.wait_terminal(list(EXPECTED), args.timeout)
        print()
        print("$ kubectl get tradingstrategies")
        print(h.kubectl("get", "tradingstrategies").stdout)
        for model in EXPECTED:
            print(f"MLflow aliases of {model}: {h.aliases(model)}")
        print("\n$ kubectl get pods -o wide")
        print(h.kubectl("get", "pods", "-o", "wide").stdout, end="")
        # the champion Deployment's current pod: the promotion has just rolled it to v2, so wait for the
        # rollout and for the new pod's first lines (it loads its model before it logs)
        h.kubectl("rollout", "status", "deployment/aapl-meanrev-champion", "--timeout=90s", check=False)
        print("\n$ kubectl logs deployment/aapl-meanrev-champion --tail=8")
        deadline = time.monotonic() + 60
        while True:
            logs = h.kubectl("logs", "deployment/aapl-meanrev-champion", "--tail=8", check=False)
            if logs.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(2)
        print(logs.stdout or logs.stderr or "(no lines yet)\n", end="")
        print("\n$ python hack/localstack.py status   # the node's parts and their memory")
        print(subprocess.run([sys.executable, str(HACK / "localstack.py"), "status", "--dir", str(h.dir)],
                             text=True, capture_output=True).stdout, end="")
        ok = phases == EXPECTED
        ok = incident_drill(h) and ok
        say(f"{'OK' if ok else 'FAILED'}: {phases} (expected {EXPECTED}); {time.monotonic() - t0:.0f}s in all")
        return 0 if ok else 1
    finally:
        if args.keep:  # the sandbox, and the cluster in it, ends with this process
            say("a shell inside the sandbox, the stack's env set (kubectl, helm, kubectl quantramp); exit to tear down")
            shell_env = {**os.environ, **h.env}
            shell_env["PATH"] = f"{h.env.get('PATH', '')}:{os.environ.get('PATH', '/usr/bin:/bin')}"
            subprocess.run(["/bin/bash", "-i"], env=shell_env)
        h.down()


if __name__ == "__main__":
    sys.exit(main())
