"""The trader pod's runtime with QR_BROKER=ib: real ib_async against hack/fake_tws.py, a real
redis-server, the real AAPL minute bars.

Orders go to IB when they are decided (before the next bar is processed), fills and IB's
commission reports are booked, IB's positions are adopted at start-up, a kill and a Redis
outage cancel the order working at IB, an unconfirmed cancel counts as position, and an order
written ahead before a crash is never sent again after the restart. A kill's flatten waits while
IB has not answered the cancel of the order it withdrew, and goes once, sized with its fills; a
position break found at a reconnect mid-run is booked once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from quantramp.trader import killswitch as ks
from quantramp.trader.backtest import make_engine, stable_seed
from quantramp.trader.ib import IBBroker
from quantramp.trader.liveorders import IBOrders
from quantramp.trader.metrics import TraderMetrics
from quantramp.trader.server import Runtime, TraderSettings, _State
from quantramp.trader.state import Keys, StateStore, connect
from support.trader_pod import POD_ENV, Momentum
from test_trader_killswitch_redis import wait_for  # (pred, timeout) -> whether it came true

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "hack"))
from fake_tws import FakeTWS  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class IBPod:
    """A trader runtime as the pod builds it with QR_BROKER=ib; every order IB receives is recorded
    with what the engine had processed when it was sent (bars, the order still undecided-upon)."""

    def __init__(self, bars, redis_url: str | None, port: int, **env) -> None:
        e = {**POD_ENV, "REDIS_URL": redis_url or "", "QR_BROKER": "ib", "IB_PORT": str(port), "IB_CLIENT_ID": "21",
             "IB_ACCOUNT": "DU1234567",
             "QR_IB_SETTLE_SECONDS": "2", **{k: str(v) for k, v in env.items()}}
        self.settings = s = TraderSettings.from_env(e)
        self.engine = make_engine(Momentum(), s.engine_config(), bars, seed=stable_seed(s.namespace, s.strategy, s.role))
        ib = IBBroker(s.ib)
        self.orders = IBOrders(ib, paper=True, fee_schedule=s.fee_schedule(), settle_timeout_s=s.ib_settle_s)
        self.engine.broker = self.orders
        self.sent: list[dict] = []
        submit = ib.submit

        def recording(order):
            pending = self.engine.next_order()
            self.sent.append({"order": order, "bars": self.engine.bars, "position": self.engine.live.position,
                              "pending": pending.order_id if pending else None, "at": time.time(),
                              "redis_up": self.rt.redis_up, "killed": self.rt.latch.engaged})
            return submit(order)

        ib.submit = recording
        #: every cancel asked of IB: (order id, whether the engine had already dropped the order:
        #: True = withdrawn by a kill or an outage, False = the bar's immediate-or-cancel)
        self.cancels: list[tuple[str, bool]] = []
        cancel = ib.cancel

        def recording_cancel(order_id):
            sent = self.orders.sent.get(order_id)
            self.cancels.append((order_id, bool(sent and sent.detached)))
            return cancel(order_id)

        ib.cancel = recording_cancel
        self.metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage)
        self.http = _State(self.metrics)
        self.keys = Keys(s.namespace, s.strategy, s.role, "")
        self.store = StateStore(connect(redis_url), self.keys) if redis_url else None
        self.rt = Runtime(s, self.engine, bars, self.metrics, self.http, self.store, ib_orders=self.orders)

    def mark(self, symbol: str) -> float:
        """The market price for the fake: the last close this pod saw (what a market order fills at)."""
        return float(self.engine.live.mark)

    async def close(self) -> None:
        await self.orders.ib.stop()
        if self.store is not None:
            await self.store.close()


def _fake(pods: list, **kw) -> FakeTWS:
    """A fake TWS whose fills are at the last close the (current) pod saw."""
    return FakeTWS(price_fn=lambda o: pods[-1].mark(o.symbol), **kw)


def test_orders_go_to_ib_at_decision_fills_and_fees_are_booked(redis_server, aapl_bars):
    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods, positions={"AAPL": (20, 190.0)})
        port = await fake.start()
        pod = IBPod(aapl_bars, redis_server.url, port)
        pods.append(pod)
        n = await pod.rt.run(asyncio.Event(), max_bars=600)
        assert n == 600
        eng = pod.engine
        # IB's 20 shares were adopted before the first decision (booked at the first bar's open)
        assert eng.reconciled_shares == 20
        # every order was sent when decided: the engine had not yet processed the bar after it
        entries = [x for x in pod.sent if not x["order"].closing]
        assert len(entries) >= 5, pod.sent[:3]
        for x in pod.sent:
            assert x["pending"] == x["order"].order_id, x  # still the engine's working decision
        # IB's books and ours agree: shares, fills, commissions (IB's reports, USD)
        await pod.rt._service_ib()
        assert eng.live.position == int(fake.positions["AAPL"][0])
        ib_fees = sum(ex.commission for ex in fake.executions)
        assert eng.live.fees == pytest.approx(ib_fees, abs=1e-9)
        assert eng.trades == len({ex.order.order_ref for ex in fake.executions})
        assert {o.order_ref for o in fake.orders.values()} == {x["order"].order_id for x in pod.sent}
        # fills at the decision bar's close: the arrival price, so no slippage against it
        st = eng.stats()
        assert st.slippage_realized_bps == pytest.approx(0.0, abs=1e-6)
        assert st.fill_ratio == pytest.approx(1.0)
        await pod.close()
        await fake.stop()

    asyncio.run(scenario())


def test_kill_cancels_the_order_working_at_ib(redis_server, aapl_bars):
    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods, fill_mode="accept")  # orders stay working at IB
        port = await fake.start()
        # slow bars: the kill lands between an order's decision and its bar, while it works at IB
        pod = IBPod(aapl_bars, redis_server.url, port, QR_BAR_INTERVAL_SECONDS="0.3")
        pods.append(pod)
        stop = asyncio.Event()
        task = asyncio.create_task(pod.rt.run(stop))
        working = lambda: [o for o in fake.orders.values() if o.working and o.order_ref]  # noqa: E731
        fresh = lambda: bool(working()) and time.time() - pod.sent[-1]["at"] < 0.1  # noqa: E731
        assert await wait_for(fresh, timeout=40), "an order must be working at IB before the kill"
        op = Redis.from_url(redis_server.url, decode_responses=True)
        await ks.engage(op, pod.keys, reason="drill", flatten=False, id="k-ib")
        await ks.wait_ack(op, pod.keys, "challenger", "k-ib")
        # cancelled at IB by the kill itself (withdrawn, not the next bar's cancel), confirmed, and no
        # risk-adding order after the kill
        assert await wait_for(lambda: not working(), timeout=5), [o.order_ref for o in working()]
        withdrawn = {oid for oid, detached in pod.cancels if detached}
        assert withdrawn, pod.cancels
        assert all(fake_o.status == "Cancelled" for fake_o in fake.orders.values() if fake_o.order_ref in withdrawn)
        n = len(pod.sent)
        at = time.time()
        await wait_for(lambda: pod.rt.processed > 60, timeout=20)
        after = [x for x in pod.sent if x["at"] > at]
        assert all(x["order"].closing for x in after), after
        assert all(x["order"].closing for x in pod.sent if x["killed"]), "a risk-adding order sent while killed"
        assert len(pod.sent) == n + len(after)
        stop.set()
        await task
        await op.aclose()
        await pod.close()
        await fake.stop()

    asyncio.run(scenario())


def test_redis_outage_cancels_the_order_working_at_ib(redis_server, aapl_bars):
    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods, fill_mode="accept")
        port = await fake.start()
        # slow bars: the outage lands between an order's decision and its bar (the kill listener's
        # connection drops at once), so the order is still working at IB when Redis goes
        pod = IBPod(aapl_bars, redis_server.url, port, QR_BAR_INTERVAL_SECONDS="0.3")
        pods.append(pod)
        stop = asyncio.Event()
        task = asyncio.create_task(pod.rt.run(stop))
        working = lambda: [o for o in fake.orders.values() if o.working]  # noqa: E731
        fresh = lambda: bool(working()) and time.time() - pod.sent[-1]["at"] < 0.1  # noqa: E731
        assert await wait_for(fresh, timeout=40), "an order must be working at IB before the outage"
        redis_server.stop(kill=True)
        assert await wait_for(lambda: not pod.rt.redis_up, timeout=10)
        # the risk-adding order working at IB is cancelled by the outage handler itself (withdrawn, not
        # the next bar's cancel); only flattening orders may go now
        assert await wait_for(lambda: all(o.order_ref and _closing(pod, o.order_ref) for o in working()), timeout=5), \
            [o.order_ref for o in working()]
        withdrawn = {oid for oid, detached in pod.cancels if detached}
        assert withdrawn, pod.cancels
        assert all(fake_o.status == "Cancelled" for fake_o in fake.orders.values() if fake_o.order_ref in withdrawn)
        await asyncio.sleep(1.0)  # a few more bars without Redis
        assert all(x["order"].closing for x in pod.sent if not x["redis_up"]), "a risk-adding order sent without Redis"
        stop.set()
        await task
        await pod.close()
        await fake.stop()

    asyncio.run(scenario())


def _closing(pod: IBPod, ref: str) -> bool:
    return any(x["order"].order_id == ref and x["order"].closing for x in pod.sent)


def test_unconfirmed_cancel_counts_as_position(aapl_bars):
    """IB never confirms a cancel: the working shares count as position, so the next decision
    never sends a second order on top of them."""

    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods, fill_mode="accept")
        fake._cancel_order = lambda c, f: None  # cancels are swallowed: nothing is confirmed
        port = await fake.start()
        pod = IBPod(aapl_bars, None, port, QR_IB_SETTLE_SECONDS="0.05")
        pods.append(pod)
        await pod.rt.run(asyncio.Event(), max_bars=300)
        entries = [x for x in pod.sent if not x["order"].closing]
        assert entries, "the model trades on these bars"
        first = entries[0]["order"]
        # after the first entry nothing else that adds risk in its direction was sent
        same_way = [x for x in entries[1:] if x["order"].qty * first.qty > 0]
        assert same_way == [], [x["order"] for x in same_way]
        assert pod.engine.broker_working_qty == first.qty
        await pod.close()
        await fake.stop()

    asyncio.run(scenario())


def test_order_written_ahead_and_sent_before_a_crash_is_never_sent_again(redis_server, aapl_bars):
    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods)
        port = await fake.start()
        a = IBPod(aapl_bars, redis_server.url, port)
        pods.append(a)
        await a.rt.run(asyncio.Event(), max_bars=120)
        sent = a.sent[-1]["order"]
        # the crash: the order went to IB (and filled), the book was saved with it still working,
        # and the intent is the last written; the process dies before the next bar
        assert a.engine.next_order() is not None and a.engine.next_order().order_id == sent.order_id
        await a.orders.ib.stop()
        await a.store.close()
        b = IBPod(aapl_bars, redis_server.url, port)
        pods.append(b)
        await b.rt.run(asyncio.Event(), max_bars=3)
        assert sent.order_id not in {x["order"].order_id for x in b.sent}, "re-sent after the restart"
        refs = [o.order_ref for o in fake.orders.values()]
        assert refs.count(sent.order_id) == 1
        # IB's position (the order's fill included) is the book's
        assert b.engine.live.position == int(fake.positions["AAPL"][0])
        await b.close()
        await fake.stop()

    asyncio.run(scenario())


def test_the_pod_wires_ib_from_its_env(aapl_bars):
    """``_serve`` as ``quantramp-trader run`` calls it: QR_BROKER=ib and IB_* build the IB broker, every
    engine sends its orders there, and the connection is closed on stop."""
    import threading

    from quantramp.trader.server import _serve, build_engine

    async def scenario():
        fake = FakeTWS(default_price=190.0, positions={"AAPL": (5, 190.0)})
        port = await fake.start()
        env = {**POD_ENV, "QR_BROKER": "ib", "IB_PORT": str(port), "IB_CLIENT_ID": "31", "IB_ACCOUNT": "DU1234567"}
        s = TraderSettings.from_env(env)
        assert s.broker == "ib" and s.ib.api_port == port and s.ib.client_id == 31 and s.ib.mode == "paper"
        engine = build_engine(s, Momentum())
        metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage)
        code = await _serve(s, engine, aapl_bars, metrics, _State(metrics), threading.Event(), 400)
        assert code == 0
        assert isinstance(engine.broker, IBOrders) and engine.reconciled_shares == 5
        assert fake.orders and all(o.client_id == 31 for o in fake.orders.values())
        assert all(o.order_ref.startswith("AAPL-") for o in fake.orders.values())  # the engine's ids, as orderRef
        assert await wait_for(lambda: fake.connected_clients == 0, timeout=5), "IB left connected after the stop"
        await fake.stop()

    asyncio.run(scenario())


def test_settings_refuse_a_paper_pod_on_a_live_account():
    env = {**POD_ENV, "QR_BROKER": "ib", "IB_MODE": "live", "QR_PAPER": "true", "IB_ACCOUNT": "U1"}
    with pytest.raises(Exception, match="a paper \\(shadow\\) pod never trades a live IB account"):
        TraderSettings.from_env(env)
    with pytest.raises(Exception, match="QR_BROKER='alpaca' must be sim or ib"):
        TraderSettings.from_env({**POD_ENV, "QR_BROKER": "alpaca"})
    assert TraderSettings.from_env({**POD_ENV, "QR_BROKER": "ib", "IB_MODE": "live", "QR_PAPER": "false",
                                    "IB_ACCOUNT": "U1"}).ib.api_port == 7496
    with pytest.raises(Exception, match="IB_ACCOUNT is required with QR_BROKER=ib"):
        TraderSettings.from_env({**POD_ENV, "QR_BROKER": "ib"})


def test_each_role_adopts_only_its_own_account(aapl_bars):
    """One IB Gateway managing two accounts (the champion's and the challenger's): a pod adopts the shares
    of its own account only, and its orders go to that account."""

    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods, accounts=("DU111", "DU222"))
        fake.account_positions["DU222"]["AAPL"] = [50.0, 190.0]  # the other role's shares
        port = await fake.start()
        pod = IBPod(aapl_bars, None, port, IB_ACCOUNT="DU111")
        pods.append(pod)
        await pod.rt.run(asyncio.Event(), max_bars=300)
        await pod.rt._service_ib()
        assert pod.engine.reconciled_shares == 0
        assert fake.orders and {o.account for o in fake.orders.values()} == {"DU111"}
        assert fake.account_positions["DU222"]["AAPL"] == [50.0, 190.0]
        assert pod.engine.live.position == int(fake.account_positions["DU111"].get("AAPL", [0])[0])
        await pod.close()
        await fake.stop()

    asyncio.run(scenario())


def test_an_order_works_at_ib_until_its_bar(aapl_bars):
    """The watchdog's between-bar duties never cancel the order the engine still owns: it works at IB until
    the next bar, whose settle cancels what is left (one-bar immediate-or-cancel)."""

    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods, fill_mode="accept")
        port = await fake.start()
        pod = IBPod(aapl_bars, None, port, QR_BAR_INTERVAL_SECONDS="0.4")
        pods.append(pod)
        stop = asyncio.Event()
        task = asyncio.create_task(pod.rt.run(stop))
        assert await wait_for(lambda: bool(pod.sent) and time.time() - pod.sent[-1]["at"] < 0.05, timeout=40)
        ref, bars_then = pod.sent[-1]["order"].order_id, pod.rt.processed
        order = next(o for o in fake.orders.values() if o.order_ref == ref)
        await asyncio.sleep(0.3)  # past the watchdog's tick (every half bar: 0.2 s), before the next bar (0.4 s)
        assert pod.rt.processed == bars_then and order.working, (pod.rt.processed, bars_then, order.status)
        assert await wait_for(lambda: not order.working and pod.rt.processed > bars_then, timeout=5)
        assert order.status == "Cancelled"  # by the next bar's settle
        stop.set()
        await task
        await pod.close()
        await fake.stop()

    asyncio.run(scenario())


def test_a_position_break_found_at_a_reconnect_mid_run_is_booked_once(aapl_bars):
    """IB drops the connection mid-run and the pod reconnects and reconciles. With nothing changed at IB the
    engine books nothing; after 7 shares were bought by hand in TWS (no execution of this client explains
    them), the next reconnect's break is booked into the engine at its last mark, once, and the engine agrees
    with IB's account again."""

    async def reconnect(pod, fake):
        before = pod.orders.ib.last_reconcile
        await fake.drop_clients()
        assert await wait_for(lambda: pod.orders.ib.ready and pod.orders.ib.last_reconcile is not before, timeout=30)
        await pod.rt._service_ib()
        await pod.rt._service_ib()  # a second pass books nothing more

    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods)
        port = await fake.start()
        pod = IBPod(aapl_bars, None, port)
        pods.append(pod)
        await pod.rt.run(asyncio.Event(), max_bars=200)
        await pod.rt._service_ib()
        held = fake.account_positions["DU1234567"]
        at_ib = lambda: int(held.get("AAPL", [0])[0])  # noqa: E731
        assert pod.engine.live.position == at_ib() and pod.engine.reconciled_shares == 0

        await reconnect(pod, fake)
        assert pod.orders.ib.last_reconcile.position_breaks == {}
        assert pod.engine.live.position == at_ib() and pod.engine.reconciled_shares == 0

        held.setdefault("AAPL", [0.0, 0.0])[0] += 7  # bought by hand in TWS
        cash, mark = pod.engine.live.cash, pod.engine.live.mark
        await reconnect(pod, fake)
        assert pod.orders.ib.last_reconcile.position_breaks["AAPL"][1] - pod.orders.ib.last_reconcile.position_breaks["AAPL"][0] == 7
        assert pod.engine.live.position == at_ib() and pod.engine.reconciled_shares == 7
        assert pod.engine.live.cash == pytest.approx(cash - 7 * mark, abs=1e-9)  # at the last mark
        await pod.close()
        await fake.stop()

    asyncio.run(scenario())


def test_a_kill_s_flatten_waits_for_ib_to_answer_the_withdrawn_order(redis_server, aapl_bars):
    """A kill with flatten while an order works at IB and IB does not answer the cancel (for longer than the
    settle timeout): no flatten goes while the withdrawn order's outcome is unknown (it could still fill,
    and a flatten sized without it would leave a position or cross to the other side). When IB answers,
    with part of it filled, the flatten goes, sized with the fill, and the account ends flat."""

    async def scenario():
        pods: list[IBPod] = []
        fake = _fake(pods)
        port = await fake.start()
        pod = IBPod(aapl_bars, redis_server.url, port, QR_BAR_INTERVAL_SECONDS="0.3")
        pods.append(pod)
        stop = asyncio.Event()
        task = asyncio.create_task(pod.rt.run(stop))
        assert await wait_for(lambda: pod.engine.live.position != 0, timeout=40), "a position first"
        fake.fill_mode = "accept"  # the next order works at IB
        working = lambda: [o for o in fake.orders.values() if o.working and o.order_ref]  # noqa: E731
        assert await wait_for(lambda: bool(working()) and time.time() - pod.sent[-1]["at"] < 0.1, timeout=40)
        fake.silent_cancels = True  # IB says nothing about cancels
        op = Redis.from_url(redis_server.url, decode_responses=True)
        at = time.time()
        await ks.engage(op, pod.keys, reason="drill", flatten=True, id="k-silent")
        await ks.wait_ack(op, pod.keys, "challenger", "k-silent")
        assert await wait_for(lambda: bool(fake.held_cancels), timeout=5)
        (_, withdrawn), = fake.held_cancels[:1]
        await asyncio.sleep(3 * pod.settings.ib_settle_s)  # past every settle's timeout, several bars
        assert [(x["order"].order_id, x["order"].qty, x["at"] - at) for x in pod.sent if x["at"] > at] == [], \
            "an order went while IB was silent"
        assert withdrawn.working
        fake.fill_mode = "fill"
        booked, sign = pod.engine.live.position, (1 if withdrawn.action == "BUY" else -1)
        part = 1 if booked + sign != 0 else 2  # (a fill that leaves a position to flatten)
        fake.fill_order(withdrawn.order_ref, part)  # part of it filled after all
        fake.answer_cancels()
        left = booked + sign * part
        held = fake.account_positions["DU1234567"]
        assert await wait_for(lambda: int(held.get("AAPL", [0])[0]) == 0 and pod.engine.live.position == 0, timeout=20), \
            (held, pod.engine.live.position)
        after = [x["order"] for x in pod.sent if x["at"] > at]
        # one flatten, sized with the fill (never a second one for the same shares, never across zero)
        assert left != 0 and [o.qty for o in after] == [-left] and after[0].closing, \
            (left, [(x["order"].order_id, x["order"].qty, x["position"], x["at"] - at) for x in pod.sent if x["at"] > at])
        stop.set()
        await task
        await op.aclose()
        await pod.close()
        await fake.stop()

    asyncio.run(scenario())
