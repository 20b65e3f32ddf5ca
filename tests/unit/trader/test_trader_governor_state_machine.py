"""The governor's trading state against an oracle written from the spec (issue 12: D1, D3, D4).

Random sequences of marks, new days, manual halts, reduce-only and resumes; after each step the
governor's state and cause must equal the oracle's, and a check must obey the state (HALTED: only
a flatten; REDUCING: |position| never grows). Fails on 232021b (REDUCING lost across a day after a
daily-loss halt; a daily-loss halt lifted by halt + resume).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantramp.trader.governor import ACTIVE, HALTED, REDUCING, Governor, default_limits

CAPITAL = 10_000.0
LIM = default_limits(CAPITAL)  # loss 200, soft 200, reduce 300, halt 500
T0 = 1_800_000_000 * 10**9

op = st.one_of(
    st.tuples(st.just("mark"), st.floats(-150.0, 150.0, allow_nan=False)),
    st.tuples(st.just("day"), st.just(0.0)),
    st.tuples(st.just("halt"), st.just(0.0)),
    st.tuples(st.just("reduce"), st.just(0.0)),
    st.tuples(st.just("resume"), st.just(0.0)),
)


class Oracle:
    def __init__(self):
        self.equity = self.peak = self.day_start = CAPITAL
        self.date = 0
        self.loss_date = None
        self.dd_halt = self.reducing = self.manual_halt = self.manual_reduce = False

    @property
    def dd(self):
        return max(0.0, self.peak - self.equity)

    def latch(self):
        if self.dd >= LIM.drawdown_halt_usd:
            self.dd_halt = True
        if self.equity - self.day_start <= -LIM.max_daily_loss_usd:
            self.loss_date = self.date
        if self.dd >= LIM.drawdown_reduce_usd:
            self.reducing = True
        elif self.dd < LIM.drawdown_soft_usd:
            self.reducing = False

    def state(self):
        if self.dd_halt:
            return HALTED, "drawdown_halt"
        if self.loss_date == self.date:
            return HALTED, "daily_loss_limit"
        if self.manual_halt:
            return HALTED, "manual_halt"
        if self.reducing:
            return REDUCING, "drawdown_reduce"
        if self.manual_reduce:
            return REDUCING, "manual_halt"
        return ACTIVE, ""


@settings(max_examples=int(os.environ.get("QR_HYP_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=80))
def test_trading_state_follows_the_spec(ops):
    g = Governor(LIM)
    o = Oracle()
    g.new_day("2026-01-01")
    for i, (kind, x) in enumerate(ops):
        if kind == "mark":
            o.equity += x
            o.peak = max(o.peak, o.equity)
            o.latch()
            g.mark("AAPL", 0, 100.0, o.equity, o.equity - o.day_start)
        elif kind == "day":
            o.date += 1
            o.day_start = o.equity
            o.latch()
            g.new_day(f"2026-01-{o.date + 1:02d}" if o.date < 31 else f"2026-02-{o.date - 30:02d}")
        elif kind == "halt":
            o.manual_halt = True
            g.halt()
        elif kind == "reduce":
            o.manual_reduce = True
            g.reduce_only()
        else:
            if o.dd_halt or o.reducing:
                o.peak = o.equity
            o.dd_halt = o.reducing = o.manual_halt = o.manual_reduce = False
            o.latch()
            g.resume(by="test", reason="property")
        want = o.state()
        assert (g.state.trading_state, g.state.halt_reason) == want, (i, kind, want)
        # the check obeys the state: a new long of 5 from flat, a flatten of a long of 5
        now = T0 + i * 10**10
        entry = g.check("AAPL", 5, 0, 100.0, 100.0, now, now)
        if want[0] != ACTIVE:
            assert entry.order_qty == 0
        flat = g.check("AAPL", 0, 5, 100.0, 100.0, now + 5 * 10**9, now + 5 * 10**9)
        assert flat.order_qty == -5
