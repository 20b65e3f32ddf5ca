"""Rendering of the champion and challenger Deployments (pure)."""

from datetime import datetime, timezone

import pytest

from quantramp.operator import engine
from quantramp.operator.models import TradingStrategySpec
from quantramp.operator.workloads import render_deployments

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
SPEC = TradingStrategySpec.model_validate(
    {
        "model": {"name": "m", "version": "5"},
        "capitalUsd": 200_000,
        "risk": {"maxPositionPercent": 40, "maxOrderPercent": 10, "maxDailyLossPercent": 1},
        "trader": {"barIntervalSeconds": 0.5, "env": [{"name": "EXTRA", "value": "x"}]},
    }
)


def rendered(status):
    out = {}
    for d in render_deployments("s", "ns", SPEC, status, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}):
        c = d["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
        out[d["metadata"]["labels"]["quantramp.io/role"]] = (d["spec"]["replicas"], env, d)
    return out


def status_at(index, champion="4", phase="Progressing"):
    """The engine's status at stage ``index`` in ``phase`` (allocation decided by the engine)."""
    st = engine.start(SPEC, None, engine.StartFacts(True, champion), T0, "NewStrategy", 1).status
    engine._enter_stage(st, index, T0)
    st.phase = phase
    engine._allocate(st)
    return st


def test_shadow_challenger_paper_trades_full_capital_beside_champion():
    r = rendered(status_at(0))
    (nc, champ, _), (nch, chal, _) = r["champion"], r["challenger"]
    assert (nc, champ["QR_MODEL_URI"], champ["QR_CAPITAL_USD"], champ["QR_PAPER"]) == (1, "models:/m/4", "200000.00", "false")
    assert (nch, chal["QR_MODEL_URI"], chal["QR_CAPITAL_USD"], chal["QR_PAPER"]) == (1, "models:/m/5", "200000.00", "true")


@pytest.mark.parametrize("index,champion_usd,challenger_usd", [(1, 198_000, 2_000), (2, 190_000, 10_000)])
def test_canary_splits_capital(index, champion_usd, challenger_usd):
    r = rendered(status_at(index))
    assert float(r["champion"][1]["QR_CAPITAL_USD"]) == champion_usd
    chal = r["challenger"][1]
    assert float(chal["QR_CAPITAL_USD"]) == challenger_usd and chal["QR_PAPER"] == "false"
    # risk limits are percent of the pod's own capital
    assert float(chal["QR_MAX_POSITION_USD"]) == pytest.approx(0.40 * challenger_usd)
    assert float(chal["QR_MAX_ORDER_USD"]) == pytest.approx(0.10 * challenger_usd)
    assert float(chal["QR_MAX_DAILY_LOSS_USD"]) == pytest.approx(0.01 * challenger_usd)
    assert chal["QR_STAGE"] == SPEC.stages[index].name


def test_rolled_back_challenger_is_scaled_to_zero():
    r = rendered(status_at(1, phase="RolledBack"))
    assert r["challenger"][0] == 0
    assert (r["champion"][0], float(r["champion"][1]["QR_CAPITAL_USD"])) == (1, 200_000)


def test_promoted_champion_runs_the_new_version_at_full_capital():
    r = rendered(status_at(3, phase="Promoted"))
    assert r["challenger"][0] == 0
    assert r["champion"][1]["QR_MODEL_URI"] == "models:/m/5"
    assert float(r["champion"][1]["QR_CAPITAL_USD"]) == 200_000


def test_no_champion_runs_only_the_challenger():
    r = rendered(status_at(0, champion=None))
    assert r["champion"][0] == 0 and r["challenger"][0] == 1


def test_the_allocation_not_the_spec_decides_the_versions():
    # B1: a spec edited to v9 does not change what the Deployments run until the engine decides so
    st = status_at(2)
    edited = SPEC.model_copy(update={"model": SPEC.model.model_copy(update={"version": "9"})})
    envs = {d["metadata"]["labels"]["quantramp.io/role"]: {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            for d in render_deployments("s", "ns", edited, st)}
    assert (envs["champion"]["QR_MODEL_URI"], envs["challenger"]["QR_MODEL_URI"]) == ("models:/m/4", "models:/m/5")


def test_pod_template_contract():
    _, env, dep = rendered(status_at(1))["challenger"]
    tpl = dep["spec"]["template"]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert tpl["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert tpl["metadata"]["labels"]["quantramp.io/stage"] == "canary-1"
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["EXTRA"] == "x" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert tpl["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_book_scopes_separate_ramps_and_keep_the_champion_across_stages():
    # B12: a new ramp's challenger never resumes the previous candidate's book;
    # B11: the champion's book (day P&L, daily-loss halt) does not change with the stage
    scopes = {}
    for index in (0, 1, 2):
        r = rendered(status_at(index))
        scopes[index] = (r["champion"][1]["QR_BOOK_SCOPE"], r["challenger"][1]["QR_BOOK_SCOPE"])
    assert {c for c, _ in scopes.values()} == {"v4"}
    assert [ch for _, ch in scopes.values()] == ["r1-shadow", "r1-canary-1", "r1-canary-2"]
    st = engine.start(SPEC, status_at(1), engine.StartFacts(True, "4"), T0, "CandidateChanged", 2).status
    assert rendered(st)["challenger"][1]["QR_BOOK_SCOPE"] == "r2-shadow"


def test_with_live_allocation_the_champion_template_is_the_same_at_every_stage_and_its_capital_moves_in_redis():
    from quantramp.operator.workloads import allocations
    from quantramp.trader import allocation as alloc

    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "REDIS_URL": "redis://r:6379/0"}
    templates, capitals = [], []
    for index in range(len(SPEC.stages) - 1):  # every stage before production: the champion runs v4
        st = status_at(index)
        champ = render_deployments("s", "ns", SPEC, st, env, live_allocation=True)[0]
        templates.append(champ["spec"]["template"])
        a = allocations("s", "ns", SPEC, st)[alloc.key("ns", "s", "champion")]
        capitals.append((a.capital_usd, a.max_position_usd, a.max_order_usd, a.max_daily_loss_usd))
    assert all(t == templates[0] for t in templates)  # no pod-template change: no restart at a transition
    c = {e["name"]: e.get("value") for e in templates[0]["spec"]["containers"][0]["env"]}
    assert c["QR_ALLOCATION_KEY"] == "quantramp:ns:s:champion:allocation" and c["QR_STAGE"] == SPEC.stages[-1].name
    assert float(c["QR_CAPITAL_USD"]) == 200_000  # the ceiling; the allocation is the capital in force
    assert capitals == [(200_000 * f, 80_000 * f, 20_000 * f, 2_000 * f) for f in (1.0, 0.99, 0.95)]
    # the challenger still restarts per stage (a fresh book per stage, review B12), with its capital in env
    chal = render_deployments("s", "ns", SPEC, status_at(1), env, live_allocation=True)[1]
    assert "QR_ALLOCATION_KEY" not in {e["name"] for e in chal["spec"]["template"]["spec"]["containers"][0]["env"]}
    # nothing to allocate when the champion does not run (a first model)
    assert allocations("s", "ns", SPEC, status_at(0, champion=None)) == {}


def test_evidence_settings_and_the_reference_model_reach_the_challenger():
    global SPEC
    saved = SPEC
    try:
        SPEC = saved.model_copy(update={"analysis": saved.analysis.model_copy(update={
            "judgement": saved.analysis.judgement.model_copy(update={"method": "anytimeValid"})})})
        out = rendered(status_at(1))
        env = out["challenger"][1]
        assert env["QR_REFERENCE_MODEL_URI"] == "models:/m/4"  # the champion's version, pinned by the ramp
        assert (env["QR_EVIDENCE_SLIPPAGE_RATIO"], env["QR_EVIDENCE_FILL_RATIO"], env["QR_EVIDENCE_PRECISION_RATIO"]) == ("1.5", "0.95", "0.9")
        assert env["QR_EVIDENCE_PNL_BAND"] == "0.1"  # canary-1's band
        assert "QR_REFERENCE_MODEL_URI" not in out["champion"][1]
        # a first model has no champion to pair with
        assert "QR_REFERENCE_MODEL_URI" not in rendered(status_at(1, champion=None))["challenger"][1]
    finally:
        SPEC = saved
    # fixed thresholds: no reference model is loaded
    assert "QR_REFERENCE_MODEL_URI" not in rendered(status_at(1))["challenger"][1]


def test_no_credential_reaches_a_deployment_only_secret_key_refs():
    """The operator's own Redis and MLflow credentials (in its env, even in its URLs) never reach a trader
    Deployment; the pods get the strategy's Redis user and the platform's MLflow Secret by secretKeyRef."""
    import json

    from quantramp.operator.workloads import MlflowSecret, TraderDefaults, pod_env_from_environment

    operator_env = {"REDIS_URL": "redis://qr-operator:op-redis-pw@redis.q:6379/0", "QR_REDIS_PASSWORD": "op-redis-pw",
                    "MLFLOW_TRACKING_URI": "https://mlf-user:mlf-pw@mlflow.q", "MLFLOW_TRACKING_PASSWORD": "mlf-pw",
                    "MLFLOW_TRACKING_TOKEN": "mlf-token"}
    pod_env = pod_env_from_environment(operator_env)
    assert pod_env == {"REDIS_URL": "redis://redis.q:6379/0", "MLFLOW_TRACKING_URI": "https://mlflow.q"}
    defaults = TraderDefaults(mlflow_secret=MlflowSecret(name="mlflow-creds", token_key=""))
    for st in (status_at(0), status_at(2)):
        deps = render_deployments("s", "ns", SPEC, st, pod_env, live_allocation=True, defaults=defaults, redis_user=True)
        text = json.dumps(deps)
        for secret in ("op-redis-pw", "mlf-pw", "mlf-token", "qr-operator", "mlf-user", "@"):
            assert secret not in text, secret
        for dep in deps:
            env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
            assert refs == {"QR_REDIS_USERNAME": {"name": "s-trader-redis", "key": "username"},
                            "QR_REDIS_PASSWORD": {"name": "s-trader-redis", "key": "password"},
                            "MLFLOW_TRACKING_USERNAME": {"name": "mlflow-creds", "key": "username", "optional": True},
                            "MLFLOW_TRACKING_PASSWORD": {"name": "mlflow-creds", "key": "password", "optional": True}}
            assert not [e for e in env if ("PASSWORD" in e["name"] or "TOKEN" in e["name"]) and "value" in e]
    # without per-strategy users (no Redis for the pods) no reference to a Secret that would not exist
    plain = render_deployments("s", "ns", SPEC, status_at(1), {"MLFLOW_TRACKING_URI": "http://m"})
    assert "secretKeyRef" not in json.dumps(plain)


def test_without_credentials_strips_only_the_userinfo():
    from quantramp.operator.workloads import without_credentials

    assert without_credentials("redis://:pw@r:6379/0") == "redis://r:6379/0"
    assert without_credentials("rediss://u:p@ss@r:6380") == "rediss://r:6380"
    assert without_credentials("http://m:5000/a@b") == "http://m:5000/a@b"
    assert without_credentials("redis://r:6379/0") == "redis://r:6379/0"
    assert without_credentials("unix:///run/redis.sock") == "unix:///run/redis.sock"
