"""Interactive Brokers broker (TWS or IB Gateway) through ``ib_async``.

``ib_async`` is the maintained fork of the archived ``ib_insync`` with the same
API (never install both: they ship the same ``eventkit`` module). This module
implements the :class:`quantramp.trader.broker.Broker` interface on top of it:

* Ports (:func:`ib_port`): TWS paper 7497, TWS live 7496, IB Gateway paper
  4002, IB Gateway live 4001 (the applications' defaults). Live needs
  ``mode="live"`` said explicitly.
* Orders are US stock (``Stock(symbol, "SMART", "USD")``) DAY market or limit
  orders; our ``order_id`` travels as IB's ``orderRef``, so orders are
  recognised again after a reconnect or a restart of the pod.
* States: :func:`map_ib_status` maps IB's order status strings (PendingSubmit,
  PreSubmitted, Submitted, Filled, Cancelled, ApiCancelled, Inactive, ...) to
  :class:`~quantramp.trader.broker.OrderState`. Fills come from execution
  reports (de-duplicated by execId), fees from commission reports.
* Disconnect behaviour. TWS keeps API orders working when the API client goes
  away, so the broker does it itself: the moment the socket drops, new orders
  are refused (REJECTED, reason "broker not ready"); it reconnects with
  exponential back-off; on reconnect it *reconciles before trading*: re-reads
  this client's open orders and executions (fills that happened while away are
  booked), cancels every order of this client still working at IB (with
  ``cancel_working_on_reconnect``, the default; also orders of an earlier life
  of the pod it does not know), waits for the cancels to be confirmed, takes
  IB's positions as the truth (differences are reported in
  :class:`ReconcileReport`) and only then accepts orders again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from .broker import BookBroker, Execution, Order, OrderBook, OrderState, OrderUpdate

log = logging.getLogger("quantramp.trader.ib")

#: default API ports of TWS and IB Gateway, by (app, mode)
IB_PORTS: dict[tuple[str, str], int] = {
    ("tws", "paper"): 7497,
    ("tws", "live"): 7496,
    ("gateway", "paper"): 4002,
    ("gateway", "live"): 4001,
}

#: IB error codes that mean the order was refused (the status that follows is
#: Cancelled or Inactive): 103 duplicate order id, 200 no security definition,
#: 201 order rejected, 203 security not available or allowed for the account
IB_REJECT_ERROR_CODES = frozenset({103, 200, 201, 203})
#: 202: "Order cancelled" (the confirmation of a cancel, or a cancel by IB)
IB_CANCELLED_ERROR_CODE = 202
#: 1100: connectivity between IB and TWS lost; 1101/1102: restored
IB_CONNECTIVITY_LOST = 1100
IB_CONNECTIVITY_RESTORED = frozenset({1101, 1102})


def ib_port(mode: str = "paper", app: str = "tws") -> int:
    """API port of ``app`` (tws | gateway) in ``mode`` (paper | live)."""
    try:
        return IB_PORTS[(app, mode)]
    except KeyError:
        raise ValueError(f"unknown IB app/mode {app!r}/{mode!r}: app is tws|gateway, mode is paper|live") from None


_WORKING = {
    # sent, not yet acknowledged by IB
    "PendingSubmit": OrderState.NEW,
    "ApiPending": OrderState.NEW,
    # accepted: held by IB (PreSubmitted, e.g. outside hours or a simulated type) or at the venue
    "PreSubmitted": OrderState.SUBMITTED,
    "Submitted": OrderState.SUBMITTED,
    "ApiUpdate": OrderState.SUBMITTED,
    # a cancel was asked for and not confirmed yet: still working
    "PendingCancel": OrderState.SUBMITTED,
    # ib_async's pseudo-status after an IB *warning* (e.g. 399, 404): the order is still live
    "ValidationError": OrderState.SUBMITTED,
}

#: IB message codes that are warnings about a live order (ib_async's list), besides 2100-2199
IB_WARNING_CODES = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167})


def ib_error_is_reject(code: int) -> bool:
    """True if IB error ``code`` on an order that then ends Cancelled means the
    order was refused or killed by IB (not the confirmation 202 of a cancel, not a warning)."""
    if code in IB_REJECT_ERROR_CODES:
        return True
    if code == IB_CANCELLED_ERROR_CODE or code in IB_WARNING_CODES or 2100 <= code < 2200:
        return False
    return code > 0


def map_ib_status(status: str, filled: float = 0.0, *, rejected: bool = False) -> OrderState:
    """Our :class:`OrderState` for IB order status ``status``.

    filled: shares IB reports filled so far (>= 0). rejected: an error that
    means a refusal (:func:`ib_error_is_reject`, e.g. 201 "Order rejected")
    was reported for the order. Pure; raises ``ValueError`` for a status it
    does not know.

    ==========================================  ==========================================
    IB status                                   ours
    ==========================================  ==========================================
    PendingSubmit, ApiPending                   NEW (PARTIALLY_FILLED if filled > 0)
    PreSubmitted, Submitted, ApiUpdate,         SUBMITTED (PARTIALLY_FILLED if filled > 0)
    PendingCancel, ValidationError (ib_async,
    after a warning: the order is still live)
    Filled                                      FILLED
    Cancelled, ApiCancelled                     CANCELLED; REJECTED if ``rejected`` and
                                                nothing filled
    Inactive                                    REJECTED (nothing filled) else CANCELLED
    ==========================================  ==========================================
    """
    if status in _WORKING:
        return OrderState.PARTIALLY_FILLED if filled > 0 else _WORKING[status]
    if status == "Filled":
        return OrderState.FILLED
    if status in ("Cancelled", "ApiCancelled"):
        return OrderState.REJECTED if rejected and filled <= 0 else OrderState.CANCELLED
    if status == "Inactive":
        return OrderState.REJECTED if filled <= 0 else OrderState.CANCELLED
    raise ValueError(f"unknown IB order status {status!r}")


def ib_side_sign(side: str) -> int:
    """+1 for an IB execution side of BOT (bought), -1 for SLD (sold)."""
    if side in ("BOT", "BUY"):
        return 1
    if side in ("SLD", "SELL", "SSHORT"):
        return -1
    raise ValueError(f"unknown IB execution side {side!r}")


@dataclass(frozen=True)
class IBConfig:
    """Where and how to connect.

    host/port: the TWS or IB Gateway API socket (port defaults from ``app`` and
    ``mode``). client_id: API client id (unique per connection; orders belong
    to it). account: IB account code ("" = the only managed account).
    connect_timeout_s: per connection attempt. backoff_*: reconnect delays,
    seconds: initial, multiplied by factor after each failure, capped at max.
    reconcile_timeout_s: how long to wait for IB's answers when reconciling.
    cancel_working_on_reconnect: cancel this client's orders still working at
    IB after a reconnect (see the module docstring).
    """

    host: str = "127.0.0.1"
    port: int | None = None
    mode: str = "paper"
    app: str = "tws"
    client_id: int = 1
    account: str = ""
    exchange: str = "SMART"
    currency: str = "USD"
    connect_timeout_s: float = 4.0
    backoff_initial_s: float = 0.5
    backoff_factor: float = 2.0
    backoff_max_s: float = 30.0
    reconcile_timeout_s: float = 5.0
    cancel_working_on_reconnect: bool = True

    def __post_init__(self) -> None:
        ib_port(self.mode, self.app)  # validates both
        if self.backoff_initial_s <= 0 or self.backoff_factor < 1 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s and backoff_factor >= 1")

    @property
    def api_port(self) -> int:
        """The port to connect to: ``port`` if given, else the default of app and mode."""
        return self.port if self.port is not None else ib_port(self.mode, self.app)

    def backoff(self, attempt: int) -> float:
        """Delay before reconnect attempt ``attempt`` (0-based), seconds."""
        return min(self.backoff_max_s, self.backoff_initial_s * self.backoff_factor**attempt)

    @staticmethod
    def from_env(environ: dict[str, str] | None = None) -> "IBConfig":
        """From IB_HOST, IB_PORT, IB_MODE (paper|live), IB_APP (tws|gateway),
        IB_CLIENT_ID, IB_ACCOUNT; unset ones keep their defaults (paper TWS)."""
        env = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        if env.get("IB_HOST"):
            kw["host"] = env["IB_HOST"]
        if env.get("IB_PORT"):
            kw["port"] = int(env["IB_PORT"])
        if env.get("IB_MODE"):
            kw["mode"] = env["IB_MODE"]
        if env.get("IB_APP"):
            kw["app"] = env["IB_APP"]
        if env.get("IB_CLIENT_ID"):
            kw["client_id"] = int(env["IB_CLIENT_ID"])
        if env.get("IB_ACCOUNT"):
            kw["account"] = env["IB_ACCOUNT"]
        return IBConfig(**kw)


@dataclass
class ReconcileReport:
    """What one reconciliation found (after a connect or reconnect).

    at: UTC. open_at_ib: our order ids IB still had working. cancelled: order
    ids (ours, or "ib:<orderId>" for orders of this client we did not know)
    we asked IB to cancel. closed_while_away: our working orders IB no longer
    had (their fills, if any, were booked from the executions).
    executions_booked: executions we had not seen. position_breaks: symbol ->
    (ours, IB's) where they differed; IB's were adopted.
    """

    at: datetime
    open_at_ib: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    closed_while_away: list[str] = field(default_factory=list)
    executions_booked: int = 0
    position_breaks: dict[str, tuple[int, int]] = field(default_factory=dict)


class ReconcileError(RuntimeError):
    """Reconciliation could not finish (IB did not answer or confirm in time)."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class IBBroker(BookBroker):
    """:class:`~quantramp.trader.broker.Broker` for TWS / IB Gateway (see the module docstring).

    Use from a running asyncio loop: ``await broker.start()`` (returns when
    connected and reconciled; keeps retrying with back-off until then), then
    ``submit`` / ``cancel`` (non-blocking), ``await broker.stop()`` at the end.
    ``state`` is one of DISCONNECTED, CONNECTING, RECONCILING, READY, STOPPED.
    """

    #: the account at IB is the record of positions: after a restart the engine adopts it
    #: (:meth:`~quantramp.trader.engine.Engine.reconcile`)
    system_of_record = True

    def __init__(
        self,
        config: IBConfig | None = None,
        *,
        ib: Any = None,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if ib is None:
            from ib_async import IB

            ib = IB()
        self.config = config or IBConfig()
        self.ib = ib
        self.book = OrderBook(clock)
        self.clock = clock
        self._sleep = sleep
        self.state = "DISCONNECTED"
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._by_ib: dict[int, str] = {}  # IB orderId -> our order id
        self._errors: dict[int, tuple[int, str]] = {}  # IB orderId -> last (code, message)
        self._commission_seen: set[str] = set()
        self._pending_cancels: set[str] = set()
        self.connects = 0
        self.disconnects = 0
        self.connect_failures = 0
        self.last_error = ""
        self.last_reconcile: ReconcileReport | None = None
        self.foreign_executions: list[Any] = []
        #: orderRefs (our order ids) IB reported for this client in any life of the pod: open,
        #: completed and executed orders seen at reconciliation (:meth:`knows`)
        self.known_refs: set[str] = set()
        self.ib_link_down = False  # TWS reported error 1100 (its link to IB lost) and no 1101/1102 since
        ib.orderStatusEvent += self._on_status
        ib.execDetailsEvent += self._on_execution
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True when connected, reconciled and accepting orders."""
        return self.state == "READY" and self.ib.isConnected() and not self.ib_link_down

    async def start(self, timeout: float | None = None) -> None:
        """Connect (retrying with back-off) and reconcile; returns when READY.
        ``timeout``: give up waiting after this many seconds (TimeoutError; the
        broker keeps trying in the background)."""
        self._stopping = False
        self._ensure_connecting()
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until READY (e.g. after a reconnect)."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        """Stop reconnecting and disconnect. Working orders are left as they are."""
        self._stopping = True
        self.state = "STOPPED"
        self._ready.clear()
        task, self._task = self._task, None
        if task and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self.ib.disconnect()

    def _ensure_connecting(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._connect_loop(), name="ib-connect")

    async def _connect_loop(self) -> None:
        cfg = self.config
        attempt = 0
        while not self._stopping:
            self.state = "CONNECTING"
            try:
                if not self.ib.isConnected():
                    await self.ib.connectAsync(
                        cfg.host, cfg.api_port, cfg.client_id, timeout=cfg.connect_timeout_s, account=cfg.account
                    )
                    self.connects += 1
                self.state = "RECONCILING"
                self.last_reconcile = await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure means: back off and try again
                self.connect_failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("IB connect/reconcile attempt %d failed: %s", attempt + 1, self.last_error)
                if self.ib.isConnected():
                    self.ib.disconnect()
                if self._stopping:
                    return
                self.state = "DISCONNECTED"
                await self._sleep(cfg.backoff(attempt))
                attempt += 1
                continue
            self.state = "READY"
            self._ready.set()
            log.info("IB broker ready (%s:%s clientId %s)", cfg.host, cfg.api_port, cfg.client_id)
            return

    def _on_disconnected(self) -> None:
        if self._stopping:
            return
        was_ready = self.state == "READY"
        self.state = "DISCONNECTED"
        self._ready.clear()
        if was_ready:
            self.disconnects += 1
            log.warning("IB connection lost: new orders blocked until reconnected and reconciled")
            try:
                self._ensure_connecting()
            except RuntimeError:  # no running loop (disconnect during interpreter shutdown)
                pass

    # -- reconciliation ----------------------------------------------------------------------
    async def _reconcile(self) -> ReconcileReport:
        from ib_async import ExecutionFilter

        cfg = self.config
        to = cfg.reconcile_timeout_s
        report = ReconcileReport(at=self.clock())
        before = self.book.positions()

        # 1. fills that happened while we were away (de-duplicated by execId)
        fills = await asyncio.wait_for(self.ib.reqExecutionsAsync(ExecutionFilter(clientId=cfg.client_id)), to)
        # every order id IB has seen from this client (executed, open, or completed: ib_async reads
        # the open and completed orders when it connects): an order written ahead before a crash
        # and found here was sent, and is never sent again (Engine.recover_intent)
        self.known_refs.update(f.execution.orderRef for f in fills if f.execution.orderRef)
        self.known_refs.update(
            t.order.orderRef for t in self.ib.trades() if t.order.orderRef and t.order.clientId == cfg.client_id
        )
        for f in fills:
            if self._book_ib_fill(f.contract, f.execution, f.time):
                report.executions_booked += 1

        # 2. open orders of this client at IB
        trades = await asyncio.wait_for(self.ib.reqOpenOrdersAsync(), to)
        self.known_refs.update(t.order.orderRef for t in trades if t.order.orderRef)
        open_ib: dict[str, Any] = {}
        to_cancel: list[Any] = []
        for t in trades:
            if t.orderStatus.status in ("Filled", "Cancelled", "ApiCancelled", "Inactive"):
                continue
            ref = t.order.orderRef
            if ref and ref in self.book:
                open_ib[ref] = t
                self._by_ib[t.order.orderId] = ref
                self.book.set_broker_ref(ref, str(t.order.orderId))
                self._apply_status(ref, t)
                if cfg.cancel_working_on_reconnect or ref in self._pending_cancels:
                    to_cancel.append(t)
                    report.cancelled.append(ref)
            elif cfg.cancel_working_on_reconnect and t.order.clientId == cfg.client_id:
                to_cancel.append(t)  # an order of an earlier life of this client
                report.cancelled.append(f"ib:{t.order.orderId}")
        report.open_at_ib = sorted(open_ib)

        # 3. our working orders IB no longer has: closed while we were away
        for upd in self.book.working():
            if upd.order_id in open_ib:
                continue
            report.closed_while_away.append(upd.order_id)
            if upd.state.working:
                self.book.transition(
                    upd.order_id, OrderState.CANCELLED, "not working at IB after reconnect (cancelled or expired while disconnected)"
                )

        # 4. cancel what is still working and wait for IB to confirm
        for t in to_cancel:
            self.ib.cancelOrder(t.order)
        self._pending_cancels.clear()
        if to_cancel:
            deadline = asyncio.get_running_loop().time() + to
            while any(t.orderStatus.status not in ("Cancelled", "ApiCancelled", "Filled", "Inactive") for t in to_cancel):
                if asyncio.get_running_loop().time() > deadline:
                    raise ReconcileError("IB did not confirm the cancels of working orders in time")
                if not self.ib.isConnected():
                    raise ReconcileError("connection lost while reconciling")
                await asyncio.sleep(0.02)

        # 5. positions: IB is the book of record
        positions = await asyncio.wait_for(self.ib.reqPositionsAsync(), to)
        theirs: dict[str, int] = {}
        for p in positions:
            if cfg.account and p.account != cfg.account:
                continue
            if p.contract.secType not in ("STK", ""):
                continue
            theirs[p.contract.symbol] = theirs.get(p.contract.symbol, 0) + int(round(p.position))
        ours = self.book.positions()
        for sym in sorted(set(theirs) | set(ours) | set(before)):
            if theirs.get(sym, 0) != ours.get(sym, 0):
                report.position_breaks[sym] = (ours.get(sym, 0), theirs.get(sym, 0))
        if report.position_breaks:
            log.warning("positions differ from IB's, adopting IB's: %s", report.position_breaks)
        self.book.set_positions(theirs)
        if not self.ib.isConnected():
            raise ReconcileError("connection lost while reconciling")
        return report

    def commission_reported(self, exec_id: str) -> bool:
        """True once IB's commission report for execution ``exec_id`` was booked."""
        return exec_id in self._commission_seen

    def knows(self, order_id: str) -> bool:
        """True if IB has seen order ``order_id`` from this client, in this life of the pod or an
        earlier one (its orderRef was among the executions, open or completed orders read when
        reconciling)."""
        return order_id in self.book or order_id in self.known_refs

    # -- the Broker interface -----------------------------------------------------------------
    def submit(self, order: Order) -> OrderUpdate:
        """Place ``order`` at IB (NEW until IB acknowledges it). Refused
        (REJECTED with a reason, nothing sent) when not READY."""
        if order.order_id in self.book:
            from dataclasses import replace

            return replace(self.book.get(order.order_id), state=OrderState.REJECTED, reason=f"duplicate order id {order.order_id!r}")
        if not self.ready:
            why = "TWS lost its link to IB" if self.ib_link_down and self.state == "READY" else self.state
            self.book.add(order, OrderState.NEW)
            return self.book.transition(order.order_id, OrderState.REJECTED, f"broker not ready ({why}): new orders blocked")
        from ib_async import LimitOrder, MarketOrder, Stock

        contract = Stock(order.symbol, self.config.exchange, self.config.currency)
        if order.order_type == "LMT":
            ib_order = LimitOrder(order.side, abs(order.qty), order.limit_price)
        else:
            ib_order = MarketOrder(order.side, abs(order.qty))
        ib_order.orderRef = order.order_id
        ib_order.tif = "DAY"
        if self.config.account:
            ib_order.account = self.config.account
        self.book.add(order, OrderState.NEW)
        try:
            trade = self.ib.placeOrder(contract, ib_order)
        except ConnectionError as e:
            return self.book.transition(order.order_id, OrderState.REJECTED, f"not sent: {e}")
        self._by_ib[trade.order.orderId] = order.order_id
        self.book.set_broker_ref(order.order_id, str(trade.order.orderId))
        return self.book.get(order.order_id)

    def cancel(self, order_id: str) -> OrderUpdate:
        """Ask IB to cancel; CANCELLED once IB confirms. While disconnected the
        cancel is remembered and sent when reconciling."""
        upd = self.book.get(order_id)
        if upd.state.terminal:
            return upd
        if upd.broker_ref is None:
            return self.book.transition(order_id, OrderState.CANCELLED, "cancelled by client before it was sent")
        if not self.ib.isConnected():
            self._pending_cancels.add(order_id)
            return upd
        trade = self._trade(order_id)
        if trade is not None:
            self.ib.cancelOrder(trade.order)
        else:
            self.ib.client.cancelOrder(int(upd.broker_ref))
        return self.book.get(order_id)

    # -- ib_async events -------------------------------------------------------------------------
    def _trade(self, order_id: str) -> Any:
        for t in self.ib.trades():
            if t.order.orderRef == order_id:
                return t
        return None

    def _our_id(self, ib_order_id: int, order_ref: str = "") -> str | None:
        if order_ref and order_ref in self.book:
            return order_ref
        oid = self._by_ib.get(ib_order_id)
        return oid if oid in self.book else None

    def _last_error(self, trade: Any) -> tuple[int, str] | None:
        for entry in reversed(getattr(trade, "log", []) or []):
            if getattr(entry, "errorCode", 0):
                return int(entry.errorCode), entry.message
        return self._errors.get(trade.order.orderId)

    def _apply_status(self, order_id: str, trade: Any) -> None:
        st = trade.orderStatus
        err = self._last_error(trade)
        rejected = err is not None and ib_error_is_reject(err[0])
        try:
            state = map_ib_status(st.status, st.filled, rejected=rejected)
        except ValueError:
            log.warning("order %s: unknown IB status %r ignored", order_id, st.status)
            return
        reason = ""
        if state in (OrderState.REJECTED, OrderState.CANCELLED):
            reason = f"IB {st.status}" + (f" ({err[1]})" if err else "")
        current = self.book.get(order_id)
        if state == OrderState.FILLED and abs(current.filled_qty) < abs(current.order.qty):
            # IB says Filled before its execution reports arrived: they will move the state
            return
        self.book.transition(order_id, state, reason)

    def _on_status(self, trade: Any) -> None:
        oid = self._our_id(trade.order.orderId, trade.order.orderRef)
        if oid is None:
            return
        self._apply_status(oid, trade)

    def _book_ib_fill(self, contract: Any, ex: Any, when: datetime | None) -> bool:
        oid = self._our_id(ex.orderId, ex.orderRef)
        if oid is None:
            self.foreign_executions.append(ex)
            return False
        if self.book.seen_execution(ex.execId):
            return False
        ts = when if isinstance(when, datetime) and when.year > 1970 else self.clock()
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        qty = ib_side_sign(ex.side) * int(round(ex.shares))
        self.book.fill(
            Execution(
                exec_id=ex.execId,
                order_id=oid,
                symbol=contract.symbol,
                qty=qty,
                price=float(ex.price),
                commission_usd=0.0,
                ts=ts.astimezone(timezone.utc),
            )
        )
        return True

    def _on_execution(self, trade: Any, fill: Any) -> None:
        self._book_ib_fill(fill.contract, fill.execution, fill.time)
        oid = self._our_id(trade.order.orderId, trade.order.orderRef)
        if oid is not None:
            self._apply_status(oid, trade)

    def _on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        oid = self._our_id(trade.order.orderId, trade.order.orderRef)
        if oid is None or report.execId in self._commission_seen or not math.isfinite(report.commission):
            return
        self._commission_seen.add(report.execId)
        self.book.add_commission(oid, float(report.commission))

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        if req_id is not None and req_id >= 0 and req_id in self._by_ib:
            self._errors[req_id] = (code, message)
            oid = self._by_ib[req_id]
            upd = self.book.get(oid)
            if code in IB_REJECT_ERROR_CODES and upd.state.working and upd.filled_qty == 0:
                self.book.transition(oid, OrderState.REJECTED, f"IB error {code}: {message}")
        elif code == IB_CONNECTIVITY_LOST:
            # TWS lost its own link to IB's servers: nothing we send would reach the market
            self.ib_link_down = True
            log.warning("IB error %s (%s): new orders blocked until IB reports the link restored", code, message)
        elif code in IB_CONNECTIVITY_RESTORED:
            self.ib_link_down = False
