"""The rollback drill (``kubectl quantramp drill rollback|status``): the seed 004 "Rollback Drill
Procedure" on a TradingStrategy, its markdown report, and the days-since-drill badge.

Steps (seed 004 "Drill Process Overview"), on one strategy:

- **Step A, backup**: ``spec.killSwitch`` and the kill-related status (``status.killSwitch``, the last
  kill records, phase, stage, pause, allocation) are written to a timestamped JSON file
  (``killswitch_backup_<name>_<YYYYmmdd_HHMMSS>.json``), read back and compared before anything moves.
- **Step B, disable**: the kill switch is engaged exactly as ``kubectl quantramp kill on`` does it
  (the injected ``kill`` callable: the plugin's :func:`~.plugin.apply_kill`, which writes
  ``spec.killSwitch`` with reason ``ROLLBACK_DRILL``, trigger ``Drill``, and waits until the operator
  has broadcast it and recorded the pods' acknowledgements). Verified: ``status.killSwitch`` engaged
  with the drill's reason, and every role the operator runs (``status.allocation.<role>.replicas`` >
  0) acknowledged.
- **Step C, wait**: ``--wait`` seconds (default 120) with the switch engaged; verified still engaged
  after it (nobody released it in between).
- **Step D, restore**: released with reason ``ROLLBACK_DRILL complete`` by the same code path
  (``kill off``), back to the backed-up state (not engaged: the preconditions refuse a drill on an
  engaged switch), and verified released and acknowledged. D runs whenever B
  engaged the switch, even if C failed or was interrupted (Ctrl-C): a drill never leaves trading
  disabled behind it without saying so loudly (the report's "Emergency restore" section).
- **Step E, report**: ``drill_<name>_<YYYYmmdd_HHMM>.md`` with the executive summary (PASS/FAIL),
  each step's times and outcome, the acknowledgement latencies from ``status.killSwitch``
  (broadcast to each role's ack, seconds) and recommendations.

``--dry-run`` (CI) runs A and E only, checks the preconditions of a live drill, and says what B-D
would do. A live drill that passes records its time in the annotation ``quantramp.io/last-drill``
(ISO 8601 UTC); the operator exports ``quantramp_operator_days_since_drill`` from it and the
badge is :func:`drill_badge` (seed 004 "Drill Frequency": green < 90 days, yellow 90-120, red >
120; never drilled: red). A failed drill does not move the date (seed 004 "Failed Drill": re-run
within 7 days).

Preconditions of a live drill: the kill switch is not engaged already (a drill must not release a
real kill). Consequences the report states: engaging freezes a ``Progressing`` ramp (phase
``Paused``, reason ``KillSwitch``), which stays paused after the release until
``kubectl quantramp resume``, and the engagement files a JIRA ticket and a Slack notice like any
kill.

The module is pure but for the two files it writes: the API is injected (``get(name, ns)`` and
``patch(name, ns, body)``), so is the kill switch, the clock and the wait.
"""

from __future__ import annotations

import json
import math
import time as _time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from .models import GROUP

#: annotation on the TradingStrategy: when the last live drill passed (ISO 8601 UTC)
LAST_DRILL_ANNOTATION = f"{GROUP}/last-drill"
DRILL_REASON = "ROLLBACK_DRILL"
RESTORE_REASON = "ROLLBACK_DRILL complete"
DRILL_TRIGGER = "Drill"
#: seed 004 "Drill Frequency": recommended every 90 days, at most 120
GREEN_BEFORE_DAYS = 90
RED_AFTER_DAYS = 120
DEFAULT_WAIT_S = 120.0
#: status fields kept in the backup (besides spec.killSwitch)
BACKUP_STATUS_FIELDS = ("phase", "stage", "pause", "killSwitch", "allocation", "incident", "championVersion",
                        "challengerVersion")
ROLES = ("champion", "challenger")


def drill_badge(days: float | None) -> str:
    """Seed 004's badge for ``days`` since the last drill: ``green`` below 90, ``yellow`` from 90 to 120
    (inclusive), ``red`` above 120; ``red`` when never drilled (None) or the figure is not a number."""
    if days is None or not math.isfinite(days):
        return "red"
    if days < GREEN_BEFORE_DAYS:
        return "green"
    if days <= RED_AFTER_DAYS:
        return "yellow"
    return "red"


def parse_last_drill(value: Any) -> datetime | None:
    """The ``quantramp.io/last-drill`` annotation as an aware UTC datetime; None if absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def days_since_drill(annotations: Mapping[str, Any] | None, now: datetime) -> float | None:
    """Days (fractional, >= 0) from the last drill in ``annotations`` to ``now``; None if never drilled."""
    last = parse_last_drill((annotations or {}).get(LAST_DRILL_ANNOTATION))
    if last is None:
        return None
    return max(0.0, (now - last).total_seconds() / 86400.0)


def drill_status(obj: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """``{"lastDrill", "daysSinceDrill" (whole days), "badge", "nextDueBy"}`` of a TradingStrategy (pure)."""
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    last = parse_last_drill(ann.get(LAST_DRILL_ANNOTATION))
    days = days_since_drill(ann, now)
    whole = None if days is None else int(days)
    due = None
    if last is not None:
        from datetime import timedelta

        due = (last + timedelta(days=GREEN_BEFORE_DAYS)).isoformat().replace("+00:00", "Z")
    return {"lastDrill": None if last is None else last.isoformat().replace("+00:00", "Z"), "daysSinceDrill": whole,
            "badge": drill_badge(whole), "nextDueBy": due}


class StrategyApi(Protocol):
    """What the drill needs of the API server (the plugin adapts ``CustomObjectsApi``; tests fake it)."""

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        """The TradingStrategy as the API server returns it."""
        ...

    def patch(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the TradingStrategy."""
        ...


#: engage (True) or release (False) the kill switch with a reason and the flatten flag; returns
#: ``status.killSwitch`` once the operator has broadcast it; raises on failure
KillFn = Callable[[bool, str, bool], Mapping[str, Any]]


@dataclass
class Step:
    """One step of the drill. ``ok``: True passed, False failed, None skipped (dry run)."""

    key: str
    title: str
    ok: bool | None = None
    started: datetime | None = None
    finished: datetime | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        """Wall time of the step, seconds."""
        if self.started is None or self.finished is None:
            return None
        return round((self.finished - self.started).total_seconds(), 3)

    @property
    def outcome(self) -> str:
        return "SKIPPED" if self.ok is None else "PASS" if self.ok else "FAIL"


@dataclass
class DrillRun:
    """The drill's record: what ran, when, how it went, where the files are."""

    namespace: str
    strategy: str
    dry_run: bool
    wait_s: float
    flatten: bool
    by: str
    started: datetime
    finished: datetime | None = None
    steps: list[Step] = field(default_factory=list)
    preflight: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    would_do: list[str] = field(default_factory=list)
    backup_path: str = ""
    report_path: str = ""
    last_drill_recorded: str | None = None
    needs_emergency_restore: bool = False
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        """All steps run passed (skipped ones do not count), and nothing blocks a live drill."""
        run = [s for s in self.steps if s.ok is not None]
        return bool(run) and all(s.ok for s in run) and not self.needs_emergency_restore and not self.interrupted

    def step(self, key: str) -> Step | None:
        return next((s for s in self.steps if s.key == key), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (times ISO UTC)."""
        d = asdict(self)
        for s, sd in zip(self.steps, d["steps"]):
            sd["seconds"], sd["outcome"] = s.seconds, s.outcome
        d["passed"] = self.passed
        d["result"] = "PASS" if self.passed else "FAIL"
        return json.loads(json.dumps(d, default=_iso))


def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON: {type(v).__name__}")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- step A -----------------------------------------------------------------------------------------
def backup_payload(obj: Mapping[str, Any], taken_at: datetime) -> dict[str, Any]:
    """What step A saves: ``spec.killSwitch`` (the state the drill restores) and the kill-related status."""
    meta = obj.get("metadata") or {}
    st = obj.get("status") or {}
    return {
        "kind": "QuantrampKillSwitchBackup",
        "takenAt": taken_at.isoformat().replace("+00:00", "Z"),
        "namespace": meta.get("namespace", ""),
        "strategy": meta.get("name", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
        "spec": {"killSwitch": dict((obj.get("spec") or {}).get("killSwitch") or {})},
        "status": {k: st[k] for k in BACKUP_STATUS_FIELDS if k in st} | {"killHistory": list(st.get("killHistory") or [])[-5:]},
    }


def write_backup(payload: Mapping[str, Any], out_dir: Path, taken_at: datetime) -> Path:
    """Write the backup (seed 004: ``killswitch_backup_YYYYMMDD_HHMMSS``) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"killswitch_backup_{payload['strategy']}_{taken_at:%Y%m%d_%H%M%S}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def verify_backup(path: Path, payload: Mapping[str, Any]) -> str:
    """"" if ``path`` reads back as ``payload``, else why not (seed 004: verify the backup's integrity)."""
    try:
        back = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"cannot read the backup back: {exc}"
    if back != json.loads(json.dumps(payload)):
        return "the backup read back differs from what was written"
    return ""


# -- checks -----------------------------------------------------------------------------------------
def running_roles(obj: Mapping[str, Any]) -> list[str]:
    """Roles the operator runs pods for (``status.allocation.<role>.replicas`` > 0): they must acknowledge."""
    alloc = (obj.get("status") or {}).get("allocation") or {}
    return [r for r in ROLES if int((alloc.get(r) or {}).get("replicas") or 0) > 0 and (alloc.get(r) or {}).get("version")]


def ack_summary(ks: Mapping[str, Any]) -> dict[str, Any]:
    """``{"latencySeconds": broadcast to last ack (s) or None, "acks": {role: latency s or None}}`` of ``status.killSwitch``."""
    return {"latencySeconds": ks.get("latencySeconds"),
            "acks": {r: (a or {}).get("latencySeconds") for r, a in sorted((ks.get("acks") or {}).items())}}


def _check_kill(ks: Mapping[str, Any], engaged: bool, reason: str, expected: list[str]) -> str:
    """"" if ``status.killSwitch`` is ``engaged`` with ``reason`` and acknowledged by every ``expected`` role."""
    if bool(ks.get("engaged")) is not engaged or ks.get("reason") != reason:
        return (f"status.killSwitch is {'engaged' if ks.get('engaged') else 'released'} with reason "
                f"{ks.get('reason')!r}, expected {'engaged' if engaged else 'released'} with {reason!r}")
    missing = [r for r in expected if r not in (ks.get("acks") or {})]
    if missing:
        return f"no acknowledgement from {', '.join(missing)} (the latch is set; check the pods' Redis connection)"
    return ""


def preflight(obj: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(blockers, warnings) of a live drill on ``obj``: a blocker refuses it, a warning is reported."""
    st = obj.get("status") or {}
    blockers, warnings = [], []
    if (st.get("killSwitch") or {}).get("engaged") or ((obj.get("spec") or {}).get("killSwitch") or {}).get("engaged"):
        blockers.append("the kill switch is engaged already: a drill would release a real kill; release it first "
                        "(kubectl quantramp kill off NAME --reason ...) or drill another strategy")
    if st.get("phase") == "Progressing":
        warnings.append("the ramp is Progressing: engaging freezes it (Paused, KillSwitch) and it stays paused after "
                        "the release until `kubectl quantramp resume`, which restarts the stage's dwell and evidence")
    if not running_roles(obj):
        warnings.append("no trader pod is running: the broadcast has nobody to acknowledge it")
    warnings.append("engaging files a JIRA ticket and a Slack notice like any kill (seed 004: the drill tests the alerts)")
    return blockers, warnings


# -- the drill --------------------------------------------------------------------------------------
def run_drill(
    api: StrategyApi,
    name: str,
    namespace: str,
    *,
    by: str,
    dry_run: bool,
    wait_s: float = DEFAULT_WAIT_S,
    out_dir: str | Path = ".",
    flatten: bool = True,
    kill: KillFn | None = None,
    wait: Callable[[float], None] = _time.sleep,
    now: Callable[[], datetime] = _utcnow,
    on_step: Callable[[Step], None] = lambda s: None,
) -> DrillRun:
    """Run the drill (see the module docstring) and write its report; returns the record.

    ``kill`` is required for a live drill. ``wait(seconds)`` performs step C (the plugin shows a
    progress bar; raising KeyboardInterrupt there still restores). ``on_step`` is called as each
    step finishes. Raises only for a live drill without ``kill``; every failure of a step is recorded.
    """
    if not dry_run and kill is None:
        raise ValueError("a live drill needs the kill switch (kill=...)")
    out = Path(out_dir)
    run = DrillRun(namespace=namespace, strategy=name, dry_run=dry_run, wait_s=wait_s, flatten=flatten, by=by, started=now())
    obj = api.get(name, namespace)

    # A: backup
    a = Step("A", "Backup configuration", started=now())
    payload: dict[str, Any] = {}
    try:
        payload = backup_payload(obj, a.started)
        path = write_backup(payload, out, a.started)
        run.backup_path = str(path)
        problem = verify_backup(path, payload)
        a.ok, a.detail = not problem, problem or f"spec.killSwitch and the kill status saved to {path} and read back"
        a.data = {"path": str(path), "killSwitch": payload["spec"]["killSwitch"]}
    except OSError as exc:
        a.ok, a.detail = False, f"cannot write the backup in {out}: {exc}"
    a.finished = now()
    run.steps.append(a)
    on_step(a)

    blockers, run.warnings = preflight(obj)
    run.preflight = blockers
    pre = Step("P", "Preconditions of a live drill", ok=not blockers, started=now(),
               detail="; ".join(blockers) or "the kill switch is not engaged")
    pre.finished = pre.started
    run.steps.append(pre)
    on_step(pre)
    expected = running_roles(obj)
    if dry_run:
        run.would_do = [
            f"Step B: write spec.killSwitch {{engaged: true, reason: {DRILL_REASON!r}, trigger: {DRILL_TRIGGER}, "
            f"flatten: {str(flatten).lower()}, by: {by}}} (as `kubectl quantramp kill on`); the operator broadcasts it on "
            f"the strategy's Redis kill channel and records the acknowledgements of "
            f"{', '.join(expected) or 'no pod (none running)'}; no order that adds risk is sent"
            + ("; open positions are flattened" if flatten else ""),
            f"Step C: keep it engaged for {wait_s:g} s and check nobody released it",
            f"Step D: release with reason {RESTORE_REASON!r} as `kubectl quantramp kill off` (back to the backed-up state: "
            f"not engaged) and check the release is acknowledged",
            f"after a pass: annotate {LAST_DRILL_ANNOTATION} with the drill's time (resets the days-since-drill badge)",
        ]
        for key, title in (("B", "Disable trading"), ("C", "Wait period"), ("D", "Restore trading")):
            s = Step(key, title, ok=None, detail="dry run: not executed")
            run.steps.append(s)
            on_step(s)
        return _finish(run, out, now, on_step)

    if blockers or not a.ok:
        for key, title in (("B", "Disable trading"), ("C", "Wait period"), ("D", "Restore trading")):
            s = Step(key, title, ok=None, detail="not run: " + ("; ".join(blockers) or "the backup failed"))
            run.steps.append(s)
            on_step(s)
        return _finish(run, out, now, on_step)

    assert kill is not None
    engaged = False
    b = Step("B", "Disable trading", started=now())
    try:
        ks = dict(kill(True, DRILL_REASON, flatten))
        engaged = bool(ks.get("engaged"))
        problem = _check_kill(ks, True, DRILL_REASON, expected)
        b.ok = not problem
        b.data = ack_summary(ks)
        b.detail = problem or _ack_text("engaged", b.data)
    except KeyboardInterrupt:
        run.interrupted = True
        b.ok, b.detail = False, "interrupted: restoring now"
        engaged = _engaged_now(api, name, namespace)
    except Exception as exc:  # noqa: BLE001 - any failure is the step's
        b.ok, b.detail = False, f"kill on failed: {exc}"
        engaged = _engaged_now(api, name, namespace)
    b.finished = now()
    run.steps.append(b)
    on_step(b)

    c = Step("C", "Wait period", started=now())
    try:
        if b.ok and not run.interrupted:
            wait(wait_s)
            st = (api.get(name, namespace).get("status") or {}).get("killSwitch") or {}
            still = bool(st.get("engaged")) and st.get("reason") == DRILL_REASON
            c.ok = still
            c.detail = f"engaged for {wait_s:g} s" if still else "the kill switch was released or replaced during the wait"
        else:
            c.ok, c.detail = None, "not run: step B failed"
    except KeyboardInterrupt:
        run.interrupted = True
        c.ok, c.detail = False, "interrupted: restoring now"
    except Exception as exc:  # noqa: BLE001
        c.ok, c.detail = False, f"wait failed: {exc}"
    c.finished = now()
    run.steps.append(c)
    on_step(c)

    d = Step("D", "Restore trading", started=now())
    if engaged:
        try:
            ks = dict(kill(False, RESTORE_REASON, False))
            problem = _check_kill(ks, False, RESTORE_REASON, expected)
            d.ok = not problem
            d.data = ack_summary(ks)
            d.detail = problem or _ack_text("released", d.data)
        except Exception as exc:  # noqa: BLE001
            d.ok, d.detail = False, f"kill off failed: {exc}"
        if _engaged_now(api, name, namespace):
            run.needs_emergency_restore = True
            d.ok = False
            d.detail = (d.detail + "; " if d.detail else "") + "the kill switch is STILL ENGAGED"
        else:
            phase = (api.get(name, namespace).get("status") or {}).get("phase")
            if phase == "Paused" and payload.get("status", {}).get("phase") == "Progressing":
                run.warnings.append("the drill froze the ramp: it is Paused until `kubectl quantramp resume "
                                    f"{name} --reason ...` (restarts the stage's dwell and evidence)")
    else:
        d.ok, d.detail = None, "not run: the kill switch was not engaged"
    d.finished = now()
    run.steps.append(d)
    on_step(d)
    return _finish(run, out, now, on_step, api=api)


def _engaged_now(api: StrategyApi, name: str, namespace: str) -> bool:
    """Whether the spec or the status says engaged now (True if the API cannot tell: assume the worst)."""
    try:
        obj = api.get(name, namespace)
    except Exception:  # noqa: BLE001
        return True
    return bool(((obj.get("spec") or {}).get("killSwitch") or {}).get("engaged")
                or ((obj.get("status") or {}).get("killSwitch") or {}).get("engaged"))


def _ack_text(verb: str, acks: Mapping[str, Any]) -> str:
    roles = ", ".join(f"{r} {lat} s" if lat is not None else f"{r} (no latency)" for r, lat in acks["acks"].items())
    tail = "" if acks.get("latencySeconds") is None else f"; broadcast to last ack {acks['latencySeconds']} s"
    return f"{verb}; acknowledged by {roles or 'no pod (none running)'}{tail}"


def _finish(run: DrillRun, out: Path, now: Callable[[], datetime], on_step: Callable[[Step], None],
            api: StrategyApi | None = None) -> DrillRun:
    """Step E: record the drill time on a live pass, write the report."""
    e = Step("E", "Report", started=now())
    if api is not None and not run.dry_run and run.passed:
        stamp = run.started.isoformat(timespec="seconds").replace("+00:00", "Z")
        try:
            api.patch(run.strategy, run.namespace, {"metadata": {"annotations": {LAST_DRILL_ANNOTATION: stamp}}})
            run.last_drill_recorded = stamp
        except Exception as exc:  # noqa: BLE001
            run.warnings.append(f"could not record the drill time ({LAST_DRILL_ANNOTATION}): {exc}")
    run.finished = now()
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"drill_{run.strategy}_{run.started:%Y%m%d_%H%M}.md"
        run.report_path = str(path)
        e.ok, e.detail = True, f"report written to {path}"
        e.finished = now()
        run.steps.append(e)
        path.write_text(render_markdown(run))
    except OSError as exc:
        e.ok, e.detail = False, f"cannot write the report in {out}: {exc}"
        e.finished = now()
        if e not in run.steps:
            run.steps.append(e)
    on_step(e)
    return run


# -- the report -------------------------------------------------------------------------------------
def render_markdown(run: DrillRun) -> str:
    """The drill report (seed 004 "Report Contents": executive summary, step times, errors,
    recommendations, a placeholder for the dashboard screenshot)."""
    kind = "Dry-run drill" if run.dry_run else "Live drill"
    result = "PASS" if run.passed else "FAIL"
    lines = [
        f"# Rollback drill: {run.namespace}/{run.strategy}",
        "",
        f"**{kind}: {result}**" + (" (trading was never touched)" if run.dry_run else ""),
        "",
        "| | |",
        "|---|---|",
        f"| Started | {_iso(run.started)} |",
        f"| Finished | {_iso(run.finished) if run.finished else '-'} |",
        f"| Duration | {(run.finished - run.started).total_seconds():.1f} s |" if run.finished else "| Duration | - |",
        f"| By | {run.by} |",
        f"| Wait (step C) | {run.wait_s:g} s |",
        f"| Flatten on engage | {'yes' if run.flatten else 'no'} |",
        f"| Backup | {run.backup_path or '-'} |",
        f"| Drill time recorded ({LAST_DRILL_ANNOTATION}) | {run.last_drill_recorded or 'no'} |",
        "",
        "## Steps",
        "",
        "| step | outcome | started (UTC) | seconds | detail |",
        "|---|---|---|---|---|",
    ]
    for s in run.steps:
        started = s.started.strftime("%H:%M:%S.%f")[:-3] if s.started else "-"
        secs = "-" if s.seconds is None else f"{s.seconds:.3f}"
        lines.append(f"| {s.key} {s.title} | {s.outcome} | {started} | {secs} | {s.detail.replace('|', '/')} |")
    lines += ["", "## Acknowledgement latencies", ""]
    any_ack = False
    for key, verb in (("B", "kill"), ("D", "release")):
        s = run.step(key)
        if s is not None and s.data.get("acks") is not None:
            any_ack = True
            for role, lat in s.data["acks"].items():
                lines.append(f"- {verb}: {role} acknowledged in {lat if lat is not None else '?'} s")
            if s.data.get("latencySeconds") is not None:
                lines.append(f"- {verb}: broadcast to last acknowledgement {s.data['latencySeconds']} s")
            if not s.data["acks"]:
                lines.append(f"- {verb}: no acknowledgement recorded")
    if not any_ack:
        lines.append("None measured (dry run, or the kill switch was not engaged).")
    if run.would_do:
        lines += ["", "## What a live drill would do", ""] + [f"- {w}" for w in run.would_do]
    if run.preflight:
        lines += ["", "## Blocking a live drill", ""] + [f"- {p}" for p in run.preflight]
    if run.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in run.warnings]
    if run.needs_emergency_restore:
        lines += ["", "## EMERGENCY RESTORE NEEDED", "",
                  f"Trading is still disabled. Restore it: `kubectl quantramp kill off {run.strategy} -n {run.namespace} "
                  f"--reason \"restore after failed drill\"`, then check `kubectl quantramp kill status {run.strategy}`. "
                  f"The state before the drill is in {run.backup_path or 'the backup'}."]
    lines += ["", "## Recommendations", ""]
    failed = [s for s in run.steps if s.ok is False]
    if run.dry_run:
        lines.append("- Dry run only: schedule the live drill (`kubectl quantramp drill rollback NAME`), outside "
                     "market hours if possible.")
    elif run.passed:
        lines.append(f"- Next drill due within {GREEN_BEFORE_DAYS} days (at most {RED_AFTER_DAYS}).")
        lines.append("- File this report in the operations log; the backup file may be deleted.")
    if failed:
        lines.append("- Failed: " + "; ".join(f"step {s.key}: {s.detail}" for s in failed))
        lines.append("- Seed 004 \"Failed Drill\": make sure trading is restored now, root cause within 24 h, fix "
                     "within 48 h, re-run the drill within 7 days.")
    lines += ["", "## Dashboard", "", "_Placeholder for the dashboard screenshot._", ""]
    return "\n".join(lines)


__all__ = [
    "DRILL_REASON", "DRILL_TRIGGER", "LAST_DRILL_ANNOTATION", "RESTORE_REASON", "DrillRun", "Step", "StrategyApi",
    "backup_payload", "days_since_drill", "drill_badge", "drill_status", "parse_last_drill", "preflight",
    "render_markdown", "run_drill",
]
