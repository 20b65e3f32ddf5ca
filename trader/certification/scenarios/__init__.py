"""One module per control scenario; each exposes ``CONTROL`` (the control it exercises, an
:data:`~..auditor.CONTROLS` name), ``DESCRIPTION`` and ``run_scenario() -> Outcome``."""

from . import (
    bad_print,
    churn,
    collar,
    crash_flatten,
    drawdown_next_day,
    fast_bars,
    into_close,
    into_close_london,
    kill_close,
    late_bar,
    loss_day,
    order_size,
    position_cap,
    position_cap_daily,
    silent_close,
)

#: every scenario module, in run order
MODULES = (order_size, position_cap, position_cap_daily, churn, fast_bars, collar, loss_day, drawdown_next_day, into_close,
           into_close_london, late_bar, bad_print, crash_flatten, kill_close, silent_close)
