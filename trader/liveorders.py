"""Orders at an asynchronous broker of record (Interactive Brokers) for the bar-by-bar engine.

The engine (:mod:`.engine`) decides on bar t's close and books the order's outcome on bar
t+1 (one-bar immediate-or-cancel). With a simulated broker both happen inside the step.
With IB the order must reach the market when it is decided, and its fills come back
asynchronously. :class:`IBOrders` joins the two:

* **sent at decision time**: right after the step that decided it (and after it was written
  ahead, by the runtime), the order goes to IB (:meth:`IBOrders.send`); its arrival price (the
  decision bar's close, USD) and the impact model's slippage (bps) are kept to measure it;
* **collected asynchronously**: IB's executions and commission reports arrive on the event
  loop (``ib_async``) and are kept per order;
* **settled before the next step** (:meth:`IBOrders.settle`): what is still working when the
  symbol's next bar comes is cancelled and the cancel's confirmation awaited (bounded); the
  step then books the order's executions and IB's commissions as one fill (the engine's
  :meth:`~.engine.Engine._send` asks this adapter, which answers from IB's reports);
* **nothing is lost when a cancel races a fill**: executions or commissions that arrive after
  the order was booked are booked later (:meth:`~.engine.Engine.book_late_fill`,
  :meth:`~.engine.Engine.book_fees`); an order that left the engine before its bar (a kill, an
  outage, a flatten replacing it) is cancelled at IB at once (:meth:`IBOrders.withdraw`) and its
  outcome booked when IB confirms (:meth:`~.engine.Engine.book_detached`);
* **the governor counts working orders**: until then their remaining shares are the engine's
  ``broker_working_qty`` (position for the decision and the caps);
* **never sent twice**: after a restart, an order written ahead that IB reports from the earlier
  life (:meth:`~.ib.IBBroker.knows`) is never sent again, and IB's positions are adopted
  (:meth:`~.engine.Engine.reconcile`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from .broker import Execution, FeeSchedule, Order, OrderState, OrderUpdate

if TYPE_CHECKING:
    from .engine import Engine
    from .ib import IBBroker

log = logging.getLogger("quantramp.trader.liveorders")

#: how long to wait for IB's commission reports once an order is done, seconds (they follow the
#: executions within milliseconds; a late one is booked when it comes)
COMMISSION_WAIT_S = 1.0


@dataclass
class _Sent:
    order: Order
    #: arrival price (the decision bar's close), USD; NaN if unknown (then the bar open is the reference)
    ref_price: float
    #: the impact model's slippage for the order, bps
    modeled_bps: float
    execs: list[Execution] = field(default_factory=list)
    #: how many of ``execs`` the engine booked, and the commission booked with them (USD)
    booked_execs: int = 0
    booked_fees: float = 0.0
    booked: bool = False
    #: left the engine before its bar: booked by :meth:`IBOrders.book_loose_ends` once done
    detached: bool = False
    cancel_sent: bool = False


class IBOrders:
    """The engines' bar broker (``submit`` / ``on_bar`` / ``order`` / ``cancel`` / ``positions``)
    over one :class:`~.ib.IBBroker` shared by every symbol of the pod (see the module docstring).

    ``paper``: the account is a paper account (fills are paper). ``fee_schedule``: the simulated
    book's fees (IB's own reports are booked for the live book). ``settle_timeout_s``: how long a
    settle waits for IB to confirm a cancel, seconds.
    """

    #: the account at IB is the record of positions (Engine.reconcile adopts it)
    system_of_record = True

    def __init__(self, ib: "IBBroker", *, paper: bool, fee_schedule: FeeSchedule | None = None,
                 settle_timeout_s: float = 5.0) -> None:
        self.ib = ib
        self.paper = paper
        self.fee_schedule = fee_schedule
        self.settle_timeout_s = settle_timeout_s
        self.sent: dict[str, _Sent] = {}
        self._current: str | None = None
        ib.add_listener(self._on_update)

    # -- IB's reports ----------------------------------------------------------------------------
    def _on_update(self, upd: OrderUpdate, ex: Execution | None) -> None:
        s = self.sent.get(upd.order_id)
        if s is None or ex is None:
            return
        ref = s.ref_price
        slip = modeled = math.nan
        if math.isfinite(ref) and ref > 0:
            side = 1.0 if ex.qty > 0 else -1.0
            slip = side * (ex.price / ref - 1.0) * 1e4  # adverse positive
            modeled = s.modeled_bps
        s.execs.append(replace(ex, ref_price=ref, slippage_bps=slip, modeled_slippage_bps=modeled))

    # -- sending -----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """IB is connected and reconciled (new orders may go)."""
        return self.ib.ready

    def send(self, order: Order, ref_price: float, modeled_bps: float) -> OrderUpdate:
        """Send ``order`` to IB now (its decision was just taken); ``ref_price``: the arrival price
        (USD), ``modeled_bps``: the impact model's slippage. Idempotent: an order already sent
        is not sent again. Refused (REJECTED with IB's reason, nothing sent) when IB is not ready."""
        if order.order_id in self.sent or self.ib.knows(order.order_id):
            return self.order(order.order_id)
        self.sent[order.order_id] = _Sent(order, ref_price, modeled_bps)
        return self.ib.submit(order)

    def submit(self, order: Order) -> OrderUpdate:
        """The engine's submit on the order's bar: the order was normally sent at its decision
        (then this marks what IB reported so far as booked by the engine, and :meth:`on_bar`
        hands it over); otherwise it is sent now, unless an order of its symbol withdrawn from
        the engine is still unanswered by IB (then REJECTED, nothing sent: see :meth:`withdrawing`)."""
        self._current = order.order_id
        if order.order_id not in self.sent:
            if self.withdrawing(order.symbol) and not self.ib.knows(order.order_id):
                # an order of the symbol left the engine and IB has not answered its cancel: its fills
                # are unknown, so an order sized without them is not sent (the runtime decides again,
                # sized with them, once IB answers)
                return OrderUpdate(order, OrderState.REJECTED,
                                   reason=f"withheld: an order of {order.symbol} withdrawn earlier is not answered by IB yet")
            self.send(order, math.nan, math.nan)
        s = self.sent.get(order.order_id)
        if s is None:  # reported by IB from an earlier life: never sent again
            return replace(self.order(order.order_id), order=order)
        upd = self.ib.order(order.order_id)
        s.booked, s.booked_execs, s.booked_fees = True, len(s.execs), upd.commission_usd
        return upd

    def on_bar(self, bar_open: float, bar_volume: float, *, symbol: str | None = None,
               ts: datetime | None = None) -> list[Execution]:
        """The executions of the order the engine is booking (:meth:`submit`), as IB reported them
        (slippage against the arrival price, or ``bar_open`` when it is unknown)."""
        s = self.sent.get(self._current or "")
        if s is None:
            return []
        out = []
        for e in s.execs[: s.booked_execs]:
            if not math.isfinite(e.ref_price):
                side = 1.0 if e.qty > 0 else -1.0
                e = replace(e, ref_price=bar_open, slippage_bps=side * (e.price / bar_open - 1.0) * 1e4,
                            modeled_slippage_bps=0.0)
            out.append(e)
        return out

    def order(self, order_id: str) -> OrderUpdate:
        """The order's state at IB. An order IB reported from an earlier life of the pod (never in
        this life's book) is CANCELLED "sent before the restart". Unknown: KeyError."""
        if order_id in self.ib.book:
            return self.ib.order(order_id)
        if order_id in self.ib.known_refs:
            unknown = Order(order_id, "?", 1)  # (its details are IB's; only its existence matters here)
            return OrderUpdate(unknown, OrderState.CANCELLED, reason="sent to IB before the restart")
        raise KeyError(order_id)

    def cancel(self, order_id: str) -> OrderUpdate:
        """The engine's end-of-bar cancel (immediate-or-cancel): asked of IB once, confirmed
        asynchronously (:meth:`settle` waits for it). A closing order (it only reduces risk) is
        NOT cancelled: it keeps working until filled, and its fills are booked when they come."""
        s = self.sent.get(order_id)
        if s is not None and s.order.closing:
            return self.ib.order(order_id)
        return self._cancel_at_ib(order_id)

    def _cancel_at_ib(self, order_id: str) -> OrderUpdate:
        s = self.sent.get(order_id)
        if s is not None:
            if s.cancel_sent:
                return self.ib.order(order_id)
            s.cancel_sent = True
        return self.ib.cancel(order_id)

    def open_orders(self) -> list[OrderUpdate]:
        return self.ib.open_orders()

    def positions(self) -> dict[str, int]:
        """IB's positions (signed shares per symbol): adopted at reconciliation, moved by fills."""
        return self.ib.positions()

    def add_listener(self, listener) -> None:
        self.ib.add_listener(listener)

    # -- the runtime's side ------------------------------------------------------------------------
    def _of(self, symbol: str) -> list[_Sent]:
        return [s for s in self.sent.values() if s.order.symbol == symbol]

    def working_qty(self, symbol: str) -> int:
        """Signed shares of ``symbol`` still working at IB (not filled, not confirmed cancelled)."""
        n = 0
        for s in self._of(symbol):
            upd = self.ib.order(s.order.order_id)
            if upd.state.working:
                n += upd.remaining_qty
        return n

    def booked_working_qty(self, symbol: str) -> int:
        """Signed shares of ``symbol``'s orders the engine has already booked that still work at IB: a
        closing order is not cancelled at its bar and works on (its later fills are booked as they
        come). A flatten decided now must not sell them a second time (:meth:`.engine.Engine.flatten_next`)."""
        n = 0
        for s in self._of(symbol):
            if s.booked and not s.detached:
                upd = self.ib.order(s.order.order_id)
                if upd.state.working:
                    n += upd.remaining_qty
        return n

    def withdrawing(self, symbol: str) -> bool:
        """True while an order of ``symbol`` withdrawn from its engine (:meth:`withdraw`) is not booked yet."""
        return any(s.detached and not s.booked for s in self._of(symbol))

    def withdraw(self, order_id: str) -> bool:
        """The engine dropped ``order_id`` before its bar (kill, outage, replaced by a flatten):
        cancel it at IB now if it was sent; its outcome is booked once IB confirms. Returns whether
        it had been sent."""
        s = self.sent.get(order_id)
        if s is None or s.booked:
            return False
        s.detached = True
        if self.ib.order(order_id).state.working:
            self._cancel_at_ib(order_id)
        return True

    def _done(self, s: _Sent) -> bool:
        upd = self.ib.order(s.order.order_id)
        if upd.state.working:
            return False
        return len(s.execs) == 0 or all(self.ib.commission_reported(e.exec_id) for e in s.execs)

    async def settle(self, symbol: str, *, owned: bool = True) -> bool:
        """Before ``symbol``'s next step: cancel what is still working at IB and wait (at most
        ``settle_timeout_s``) until IB confirms and its commission reports are in. Returns True if
        everything of the symbol is done (False: still working; the engine counts it).
        ``owned`` False: only the orders withdrawn from the engine (between bars: the engine's own
        order keeps working until its bar)."""
        pending = [s for s in self._of(symbol) if (owned and not s.booked) or (s.detached and not s.booked)]
        for s in pending:
            if self.ib.order(s.order.order_id).state.working and not s.order.closing:
                self._cancel_at_ib(s.order.order_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_timeout_s
        while any(self.ib.order(s.order.order_id).state.working for s in pending):
            if loop.time() > deadline:
                log.error("IB did not confirm the cancel of %s within %.1f s: counted as working",
                          [s.order.order_id for s in pending if self.ib.order(s.order.order_id).state.working],
                          self.settle_timeout_s)
                return False
            await asyncio.sleep(0.01)
        fees_deadline = loop.time() + COMMISSION_WAIT_S
        while not all(self._done(s) for s in pending) and loop.time() < fees_deadline:
            await asyncio.sleep(0.01)
        return True

    def book_loose_ends(self, engine: "Engine") -> int:
        """Book into ``engine`` what IB reported after the engine was done with an order: detached
        orders once IB is done with them, executions and commissions that came after an order was
        booked. Forgets finished orders. Sets ``engine.broker_working_qty``. Returns the signed
        shares booked (0 if nothing)."""
        sym = engine.config.symbol
        moved = 0
        for s in self._of(sym):
            oid = s.order.order_id
            upd = self.ib.order(oid)
            if s.detached and not s.booked:
                if upd.state.working:
                    continue
                fill = engine.book_detached(s.order, upd, list(s.execs), s.ref_price)
                s.booked, s.booked_execs, s.booked_fees = True, len(s.execs), upd.commission_usd
                moved += fill.filled_qty
                log.warning("%s order %s withdrawn before its bar: %s at IB, %+d shares booked", sym, oid,
                            upd.state.value, fill.filled_qty)
                continue
            if not s.booked:
                continue
            late = s.execs[s.booked_execs:]
            if late:
                moved += engine.book_late_fill(late)
                s.booked_execs = len(s.execs)
                log.warning("%s order %s: %+d shares filled at IB after it was booked (a cancel raced the fill): "
                            "booked now", sym, oid, sum(e.qty for e in late))
            fees = upd.commission_usd - s.booked_fees
            if fees > 0:
                engine.book_fees(fees)
                s.booked_fees = upd.commission_usd
            if not upd.state.working and self._done(s):
                del self.sent[oid]
        engine.broker_working_qty = self.working_qty(sym)
        return moved
