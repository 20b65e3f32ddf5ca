"""A small protocol-level fake of TWS / IB Gateway, for tests and local runs.

It speaks the IB API socket protocol on 127.0.0.1 well enough for a real
``ib_async`` client to connect, read positions and the current time, and to
place, fill and cancel plain US stock orders:

* framing: every message is a 4-byte big-endian length followed by
  NUL-terminated text fields; the client opens with the bytes ``API\\0`` and a
  framed version range ``v<min>..<max>``;
* handshake reply: a framed ``<server version>\\0<connection time>\\0``; after
  the client's startApi (71): nextValidId (9), managedAccounts (15) and the
  usual "farm connection is OK" notices (error 2104/2106/2158, reqId -1);
* requests answered: reqPositions (61) -> position (61) ... positionEnd (62);
  reqCurrentTime (49) -> currentTime (49); reqOpenOrders (5) /
  reqAllOpenOrders (16) -> openOrder (5) + orderStatus (3) ... openOrderEnd
  (53); reqCompletedOrders (99) -> completedOrdersEnd (102); reqAccountUpdates
  (6) -> accountValue (6) + accountDownloadEnd (54); reqAccountUpdatesMulti
  (76) -> accountUpdateMultiEnd (74); reqExecutions (7) -> execDetails (11)
  ... execDetailsEnd (55); placeOrder (3); cancelOrder (4); reqGlobalCancel
  (58); reqHistoricalData (20) -> historicalData (17) with the bars published so far
  (``publish_bar``), and with keepUpToDate every bar published later as a
  historicalDataUpdate (90), as TWS keeps the last bar of a subscription up to
  date. Anything else is recorded and ignored.
* orders (``fill_mode``): ``fill`` acknowledges (openOrder, Submitted), then
  fills completely at the symbol's price (execDetails, commissionReport,
  orderStatus Filled) and updates the positions; ``partial`` fills half and
  leaves the rest working; ``accept`` leaves the order working; ``reject``
  answers error 201 and orderStatus Cancelled. Orders and executions outlive
  a client's connection, as in TWS, and are reported again on reconnect.
  ``silent_cancels``: cancel requests are held unanswered (IB slow to confirm)
  until :meth:`FakeTWS.answer_cancels`.

Field layouts follow the server version it announces (default 176). Run it by
hand with ``python hack/fake_tws.py --port 7497``. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

log = logging.getLogger("fake_tws")

#: IB server version this fake announces by default (ib_async 2.1 speaks 157..178)
DEFAULT_SERVER_VERSION = 176
#: lowest client version the fake accepts
MIN_CLIENT_VERSION = 157


def frame(*fields: object) -> bytes:
    """One framed message: length prefix + NUL-terminated fields."""
    body = "".join(f"{'' if f is None else f}\0" for f in fields).encode()
    return struct.pack(">I", len(body)) + body


def _ib_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%d %H:%M:%S UTC")


@dataclass
class FakeOrder:
    client_id: int
    order_id: int
    perm_id: int
    symbol: str
    action: str
    qty: float
    order_type: str
    lmt_price: str
    tif: str
    account: str
    order_ref: str
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_price: float = 0.0
    last_price: float = 0.0

    @property
    def remaining(self) -> float:
        return self.qty - self.filled

    @property
    def working(self) -> bool:
        return self.status in ("PreSubmitted", "Submitted", "PendingSubmit", "PendingCancel")


@dataclass
class FakeExecution:
    exec_id: str
    order: FakeOrder
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    ts: float
    commission: float


class _NullWriter:
    """Stands in for a client's writer when nobody is connected."""

    def write(self, data: bytes) -> None:
        pass


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    client_id: int = -1


class FakeTWS:
    """The fake server. ``await start()`` returns the port it listens on.

    positions: symbol -> (shares, average cost USD) of the first account. prices:
    symbol -> fill price USD (default ``default_price``; ``price_fn(order)`` instead
    when given). accounts: managed account codes; an order fills into the positions
    of its account (``account_positions``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        server_version: int = DEFAULT_SERVER_VERSION,
        accounts: tuple[str, ...] = ("DU1234567",),
        positions: dict[str, tuple[float, float]] | None = None,
        prices: dict[str, float] | None = None,
        default_price: float = 100.0,
        fill_mode: str = "fill",
        commission_per_share: float = 0.0035,
        next_order_id: int = 1,
        clock=time.time,
        price_fn=None,
        private_network: bool = False,
    ) -> None:
        # private_network: the caller runs inside a private network namespace (hack/sandbox.sh), where
        # any address of it may be bound (pods reach the fake at the node address)
        if not private_network and not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError("the fake TWS binds to loopback only (outside a private network namespace)")
        self.host = host
        self.port = port
        self.server_version = server_version
        self.accounts = accounts
        #: account -> symbol -> [shares, average cost USD]; ``positions`` is the first account's
        self.account_positions: dict[str, dict[str, list[float]]] = {a: {} for a in accounts}
        self.positions: dict[str, list[float]] = self.account_positions[accounts[0]]
        self.positions.update({s: [q, c] for s, (q, c) in (positions or {}).items()})
        self.prices = dict(prices or {})
        self.default_price = default_price
        #: price_fn(order) -> USD: the market price an order (FakeOrder) fills at (e.g. the last bar's close
        #: a test's trader saw); None: ``prices``, else the last published bar's close, else ``default_price``
        self.price_fn = price_fn
        self.fill_mode = fill_mode
        #: hold cancel requests unanswered (the order stays working) until answer_cancels()
        self.silent_cancels = False
        self.held_cancels: list[tuple[_Client, FakeOrder]] = []
        self.commission_per_share = commission_per_share
        self.next_order_id = next_order_id
        self.clock = clock
        self.orders: dict[tuple[int, int], FakeOrder] = {}
        self.executions: list[FakeExecution] = []
        self.received: list[int] = []  # message ids, in order of arrival
        self.handshakes = 0
        self._perm = itertools.count(1_000_001)
        self._exec_seq = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[_Client] = set()
        self._tasks: set[asyncio.Task] = set()
        self._con_ids: dict[str, int] = {}
        #: symbol -> published bars (epoch seconds of the bar start, open, high, low, close, volume)
        self.bars: dict[str, list[tuple[int, float, float, float, float, float]]] = {}
        self._bar_subs: list[tuple[_Client, int, str]] = []  # (client, reqId, symbol) with keepUpToDate

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> int:
        """Listen (on ``port``, or a free one when 0) and return the port."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("fake TWS listening on %s:%d (server version %d)", self.host, self.port, self.server_version)
        return self.port

    async def drop_clients(self) -> None:
        """Close every client socket at once (a TWS restart or a network drop)."""
        for c in list(self._clients):
            c.writer.transport.abort()
        self._clients.clear()
        await asyncio.sleep(0)

    async def stop_listening(self) -> None:
        """Stop accepting connections (clients that try get 'connection refused')."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def stop(self) -> None:
        await self.stop_listening()
        await self.drop_clients()
        for t in list(self._tasks):
            t.cancel()

    @property
    def connected_clients(self) -> int:
        return len(self._clients)

    # -- connection -----------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        client = _Client(writer)
        try:
            prefix = await reader.readexactly(4)
            if prefix != b"API\0":
                log.warning("not an IB API client: %r", prefix)
                return
            versions = (await self._read_msg(reader)).decode()
            lo, _, hi = versions.split(" ")[0].lstrip("v").partition("..")
            if int(hi or lo) < MIN_CLIENT_VERSION or int(lo) > self.server_version:
                log.warning("client versions %s not supported", versions)
                return
            writer.write(frame(min(self.server_version, int(hi or lo)), _ib_time(self.clock())))
            await writer.drain()
            self.handshakes += 1
            self._clients.add(client)
            while True:
                msg = await self._read_msg(reader)
                fields = msg.decode(errors="replace").split("\0")[:-1]
                if not fields:
                    continue
                self._handle(client, fields)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._clients.discard(client)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _read_msg(reader: asyncio.StreamReader) -> bytes:
        (n,) = struct.unpack(">I", await reader.readexactly(4))
        return await reader.readexactly(n)

    @staticmethod
    def _send(client: _Client, *fields: object) -> None:
        client.writer.write(frame(*fields))

    # -- requests -------------------------------------------------------------------------------
    def _handle(self, c: _Client, f: list[str]) -> None:
        msg_id = int(f[0])
        self.received.append(msg_id)
        handler = {
            71: self._start_api,
            61: self._req_positions,
            49: self._req_current_time,
            5: self._req_open_orders,
            16: self._req_all_open_orders,
            99: lambda c, f: self._send(c, 102),
            6: self._req_account_updates,
            76: lambda c, f: self._send(c, 74, 1, f[2]),
            7: self._req_executions,
            3: self._place_order,
            4: self._cancel_order,
            58: self._global_cancel,
            20: self._req_historical_data,
        }.get(msg_id)
        if handler is None:
            log.debug("ignored message %s", f)
            return
        handler(c, f)

    def _start_api(self, c: _Client, f: list[str]) -> None:
        c.client_id = int(f[2])
        self._send(c, 9, 1, self.next_order_id)
        self._send(c, 15, 1, ",".join(self.accounts))
        for code, text in (
            (2104, "Market data farm connection is OK:usfarm"),
            (2106, "HMDS data farm connection is OK:ushmds"),
            (2158, "Sec-def data farm connection is OK:secdefil"),
        ):
            self._error(c, -1, code, text)

    def _error(self, c: _Client, req_id: int, code: int, text: str) -> None:
        fields: list[object] = [4, 2, req_id, code, text]
        if self.server_version >= 166:
            fields.append("")  # advancedOrderRejectJson
        self._send(c, *fields)

    def _con_id(self, symbol: str) -> int:
        return self._con_ids.setdefault(symbol, 265598 + 1000 * len(self._con_ids))

    def _contract_fields(self, symbol: str, exchange: str = "") -> list[object]:
        # conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency, localSymbol, tradingClass
        return [self._con_id(symbol), symbol, "STK", "", 0.0, "", "", exchange, "USD", symbol, "NMS"]

    def _req_positions(self, c: _Client, f: list[str]) -> None:
        for acct, held in self.account_positions.items():
            for sym, (qty, cost) in held.items():
                self._send(c, 61, 3, acct, *self._contract_fields(sym), qty, cost)
        self._send(c, 62, 1)

    def _req_current_time(self, c: _Client, f: list[str]) -> None:
        self._send(c, 49, 1, int(self.clock()))

    def _req_account_updates(self, c: _Client, f: list[str]) -> None:
        acct = f[3] or self.accounts[0]
        if f[2] in ("1", "True"):
            self._send(c, 6, 2, "NetLiquidation", "100000.00", "USD", acct)
            self._send(c, 8, 1, time.strftime("%H:%M", time.gmtime(self.clock())))
            self._send(c, 54, 1, acct)

    def _open_orders(self, c: _Client, orders) -> None:
        for o in orders:
            if o.working:
                self._send(c, *self._open_order_fields(o))
                self._send_status(c, o)
        self._send(c, 53, 1)

    def _req_open_orders(self, c: _Client, f: list[str]) -> None:
        self._open_orders(c, [o for o in self.orders.values() if o.client_id == c.client_id])

    def _req_all_open_orders(self, c: _Client, f: list[str]) -> None:
        self._open_orders(c, list(self.orders.values()))

    def _req_executions(self, c: _Client, f: list[str]) -> None:
        req_id = int(f[2])
        want_client = int(f[3] or 0)
        for ex in self.executions:
            if want_client and ex.order.client_id != want_client:
                continue
            self._send_execution(c, req_id, ex)
        self._send(c, 55, 1, req_id)

    # -- orders ---------------------------------------------------------------------------------
    def _place_order(self, c: _Client, f: list[str]) -> None:
        # 3, orderId, 12 contract fields (conId .. tradingClass), secIdType, secId, action, qty, type, lmt, aux, tif, oca, account, ...
        order_id = int(f[1])
        symbol = f[3]
        action, qty, otype, lmt = f[16], float(f[17]), f[18], f[19]
        tif, account = f[21], f[23]
        key = (c.client_id, order_id)
        order_ref = self._field_after_place(f)
        if key in self.orders:
            self._error(c, order_id, 103, "Duplicate order id")
            return
        o = FakeOrder(c.client_id, order_id, next(self._perm), symbol, action, qty, otype, lmt, tif, account or self.accounts[0], order_ref)
        self.orders[key] = o
        self.next_order_id = max(self.next_order_id, order_id + 1)
        if self.fill_mode == "reject":
            o.status = "Cancelled"
            self._error(c, order_id, 201, "Order rejected - reason:fake TWS rejects every order")
            self._send_status(c, o)
            return
        o.status = "Submitted"
        self._send(c, *self._open_order_fields(o))
        self._send_status(c, o)
        if self.fill_mode == "fill":
            self._fill(c, o, o.qty)
        elif self.fill_mode == "partial":
            self._fill(c, o, max(1.0, float(int(o.qty // 2))))

    @staticmethod
    def _field_after_place(f: list[str]) -> str:
        # orderRef sits after: ocaGroup(22) account(23) openClose(24) origin(25) orderRef(26)
        return f[26] if len(f) > 26 else ""

    def _fill(self, c: _Client, o: FakeOrder, shares: float) -> None:
        shares = min(shares, o.remaining)
        if self.price_fn is not None:
            price = float(self.price_fn(o))
        elif o.symbol in self.prices or not self.bars.get(o.symbol):
            price = float(self.prices.get(o.symbol, self.default_price))
        else:
            price = self.bars[o.symbol][-1][4]  # the market: the last published close
        cum = o.filled + shares
        o.avg_price = (o.avg_price * o.filled + price * shares) / cum
        o.filled, o.last_price = cum, price
        if o.remaining <= 0:
            o.status = "Filled"
        ex = FakeExecution(
            exec_id=f"0000e0d5.{next(self._exec_seq):08d}.01.01",
            order=o,
            shares=shares,
            price=price,
            cum_qty=cum,
            avg_price=o.avg_price,
            ts=self.clock(),
            commission=round(max(0.35, self.commission_per_share * shares), 4),
        )
        self.executions.append(ex)
        sign = 1.0 if o.action == "BUY" else -1.0
        pos = self.account_positions.setdefault(o.account, {}).setdefault(o.symbol, [0.0, 0.0])
        new_qty = pos[0] + sign * shares
        if new_qty != 0 and (pos[0] == 0 or (pos[0] > 0) == (sign > 0)):
            pos[1] = (abs(pos[0]) * pos[1] + shares * price) / abs(new_qty)
        pos[0] = new_qty
        self._send_execution(c, -1, ex)
        self._send(c, 59, 1, ex.exec_id, ex.commission, "USD", "", "", "")
        self._send_status(c, o)

    def fill_order(self, order_ref: str, shares: float | None = None) -> None:
        """Fill a working order (all of it, or ``shares``) from the outside, e.g.
        while its client is disconnected; connected clients of its clientId are told."""
        o = next(o for o in self.orders.values() if o.order_ref == order_ref and o.working)
        clients = [c for c in self._clients if c.client_id == o.client_id]
        target = clients[0] if clients else _Client(_NullWriter())  # type: ignore[arg-type]
        self._fill(target, o, o.remaining if shares is None else shares)

    def _cancel_order(self, c: _Client, f: list[str]) -> None:
        order_id = int(f[2])
        o = self.orders.get((c.client_id, order_id))
        if o is None:
            self._error(c, order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        if not o.working:
            self._error(c, order_id, 161, f"Cancel attempted when order is not in a cancellable state. Order permId ={o.perm_id}")
            return
        if self.silent_cancels:
            self.held_cancels.append((c, o))
            return
        self._cancel(c, o)

    def answer_cancels(self) -> int:
        """Answer the held cancel requests (each order still working is cancelled and its client told);
        stops holding new ones. Returns how many were cancelled."""
        self.silent_cancels = False
        held, self.held_cancels = self.held_cancels, []
        done = 0
        for c, o in held:
            if o.working:
                self._cancel(c, o)
                done += 1
        return done

    def _cancel(self, c: _Client, o: FakeOrder) -> None:
        o.status = "Cancelled"
        self._error(c, o.order_id, 202, "Order Canceled - reason:")
        self._send_status(c, o)

    def _global_cancel(self, c: _Client, f: list[str]) -> None:
        for o in self.orders.values():
            if o.working:
                self._cancel(c, o)

    # -- bars ---------------------------------------------------------------------------------------
    def _req_historical_data(self, c: _Client, f: list[str]) -> None:
        # 20, reqId, 12 contract fields (conId, symbol, ...), includeExpired, endDateTime, barSize, duration,
        # useRTH, whatToShow, formatDate, keepUpToDate, chartOptions
        req_id, symbol, keep = int(f[1]), f[3], f[21] in ("1", "True", "true")
        rows = self.bars.get(symbol, [])
        fields: list[object] = [17, req_id, "", "", len(rows)]
        for t, o, h, lo, cl, v in rows:
            fields += [t, o, h, lo, cl, v, cl, 1]  # date (formatDate 2: epoch seconds), OHLC, volume, WAP, count
        self._send(c, *fields)
        if keep:
            self._bar_subs.append((c, req_id, symbol))

    def publish_bar(self, symbol: str, start: int, o: float, h: float, lo: float, cl: float, v: float) -> None:
        """A new bar of ``symbol`` (``start``: epoch seconds of its start): kept for later history
        requests and sent to every keepUpToDate subscriber (historicalDataUpdate, 90)."""
        self.bars.setdefault(symbol, []).append((int(start), o, h, lo, cl, v))
        for c, req_id, sym in list(self._bar_subs):
            if sym != symbol:
                continue
            if c not in self._clients:
                self._bar_subs.remove((c, req_id, sym))
                continue
            # reqId, barCount, date, open, close, high, low, average (WAP), volume
            self._send(c, 90, req_id, 1, int(start), o, cl, h, lo, cl, v)

    # -- message builders -------------------------------------------------------------------------
    def _send_status(self, c: _Client, o: FakeOrder) -> None:
        # orderId, status, filled, remaining, avgFillPrice, permId, parentId, lastFillPrice, clientId, whyHeld, mktCapPrice
        self._send(c, 3, o.order_id, o.status, o.filled, o.remaining, o.avg_price, o.perm_id, 0, o.last_price, o.client_id, "", 0.0)

    def _send_execution(self, c: _Client, req_id: int, ex: FakeExecution) -> None:
        o = ex.order
        fields: list[object] = [11, req_id, o.order_id, *self._contract_fields(o.symbol, "ISLAND")]
        fields += [
            ex.exec_id, _ib_time(ex.ts), o.account, "ISLAND", "BOT" if o.action == "BUY" else "SLD",
            ex.shares, ex.price, o.perm_id, o.client_id, 0, ex.cum_qty, ex.avg_price, o.order_ref,
            "", "", "", 1,
        ]  # fmt: skip
        if self.server_version >= 178:
            fields.append(0)  # pendingPriceRevision
        self._send(c, *fields)

    def _open_order_fields(self, o: FakeOrder) -> list[object]:
        """openOrder (5) for a plain stock order, in the layout of ``server_version``."""
        sv = self.server_version
        f: list[object] = [5, o.order_id, *self._contract_fields(o.symbol, "SMART")]
        f += [o.action, o.qty, o.order_type, o.lmt_price, "", o.tif, "", o.account, "", 0, o.order_ref, o.client_id, o.perm_id]
        f += [0, 0, 0, "", "", "", "", ""]  # outsideRth, hidden, discretionaryAmt, goodAfterTime, (deprecated), faGroup, faMethod, faPercentage
        if sv < 177:
            f.append("")  # faProfile
        # modelCode .. deltaNeutralAuxPrice (29 fields)
        f += ["", "", "", "", "", 0, "", -1, 0, "", "", "", "", "", "", 0, 0, 0, "", 3, 0, 0, "", 0, 0, "", 0, "", ""]
        # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent, basisPoints, basisPointsType, comboLegsDescrip
        f += [0, 0, "", "", "", "", ""]
        f += [0, 0, 0]  # combo legs, order combo legs, smart combo routing params
        f += ["", "", ""]  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        f += [""]  # hedgeType
        f += [0, "", "IB", 0, 0]  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, deltaNeutralContract present
        f += [""]  # algoStrategy
        f += [0, 0, o.status] + [""] * 9 + ["", "", "", "", "", 0, 0]  # solicited, whatIf, orderState..., randomizeSize/Price
        f += [0]  # conditions
        f += ["", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, "", 0]  # adjusted..., softDollarTier, cashQty, ...
        if sv >= 159:
            f.append("")  # duration
        if sv >= 160:
            f.append("")  # postToAts
        if sv >= 162:
            f.append(0)  # autoCancelParent
        if sv >= 170:
            f += ["", "", "", "", ""]  # minTradeQty, minCompeteSize, competeAgainstBestOffset, midOffsetAtWhole, midOffsetAtHalf
        return f


async def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7497)
    ap.add_argument("--fill-mode", default="fill", choices=["fill", "partial", "accept", "reject"])
    ap.add_argument("--position", action="append", default=[], metavar="SYM:QTY:COST")
    args = ap.parse_args(argv)
    positions = {}
    for p in args.position:
        sym, qty, cost = p.split(":")
        positions[sym] = (float(qty), float(cost))
    fake = FakeTWS(args.host, args.port, fill_mode=args.fill_mode, positions=positions)
    port = await fake.start()
    print(f"fake TWS on {args.host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass
