"""Simulated broker: next-bar-open fills, square-root impact, IBKR Pro commissions.

Quantities are signed whole shares (+ buy, - sell); prices USD per share;
slippage in basis points of the reference price, positive = adverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: IBKR Pro, US stocks, tiered (<= 300,000 shares a month): USD per share
IBKR_PER_SHARE_USD = 0.0035
#: IBKR Pro minimum per order, USD
IBKR_MIN_PER_ORDER_USD = 0.35
#: IBKR Pro maximum per order, as a fraction of trade value
IBKR_MAX_PCT_OF_VALUE = 0.01


def ibkr_commission(qty: float, price: float) -> float:
    """Commission in USD for one US stock order of ``|qty|`` shares at ``price`` USD.

    IBKR Pro pricing for US stocks (interactivebrokers.com, "Commissions:
    Stocks, ETFs and Warrants - North America", IBKR Pro Tiered, lowest
    volume tier; the Fixed plan has the same shape at USD 0.005/share, min USD 1.00):
    USD 0.0035 per share, at least USD 0.35 per order, at most 1% of the trade
    value. Exchange, clearing and regulatory pass-through fees are not modelled.
    Zero shares cost nothing.
    """
    shares = abs(qty)
    if shares == 0:
        return 0.0
    value = shares * price
    fee = max(IBKR_PER_SHARE_USD * shares, IBKR_MIN_PER_ORDER_USD)
    return min(fee, IBKR_MAX_PCT_OF_VALUE * value)


def sqrt_impact_bps(qty: float, sigma_daily: float, adv_shares: float, k: float = 1.0) -> float:
    """Modelled market impact of an order, in basis points (>= 0).

    Square-root law: ``k * sigma_daily * sqrt(|qty| / ADV) * 1e4``, with
    ``sigma_daily`` the daily return volatility (fraction, e.g. 0.015),
    ``adv_shares`` the average daily volume in shares and ``k`` a constant of
    order one. References: Almgren, Thum, Hauptmann & Li (2005), "Direct
    Estimation of Equity Market Impact", Risk 18(7); Grinold & Kahn, "Active
    Portfolio Management" (2000), ch. 16 (the square-root law).
    """
    if qty == 0:
        return 0.0
    if adv_shares <= 0 or not math.isfinite(adv_shares):
        raise ValueError(f"ADV must be positive, got {adv_shares}")
    return k * sigma_daily * math.sqrt(abs(qty) / adv_shares) * 1e4


@dataclass(frozen=True)
class ImpactModel:
    """Inputs of the square-root impact law.

    sigma_daily: daily return volatility (fraction). adv_shares: average daily
    volume (shares). k: impact constant (dimensionless).
    """

    sigma_daily: float
    adv_shares: float
    k: float = 1.0

    def bps(self, qty: float) -> float:
        """Modelled slippage for ``qty`` shares, bps (see :func:`sqrt_impact_bps`)."""
        return sqrt_impact_bps(qty, self.sigma_daily, self.adv_shares, self.k)


def estimate_impact_model(
    close: np.ndarray,
    volume: np.ndarray,
    bars_per_session: int,
    k: float = 1.0,
    ts: np.ndarray | None = None,
) -> ImpactModel:
    """Estimate ImpactModel inputs from a bar series.

    close: USD, shape (n,); volume: shares per bar, shape (n,); ts: optional bar
    times (datetime64), shape (n,). sigma_daily is the standard deviation of
    one-bar log returns times sqrt(bars_per_session); with ``ts``, returns
    across a gap longer than the usual bar spacing (overnight, weekends) are
    left out so the gaps do not inflate the intraday volatility. ADV is the mean
    bar volume times bars_per_session.
    """
    close = np.asarray(close, dtype=float)
    volume = np.asarray(volume, dtype=float)
    r = np.diff(np.log(close))
    if ts is not None:
        gaps = np.diff(np.asarray(ts))
        r = r[gaps <= np.median(gaps)]
    sigma_daily = float(np.std(r, ddof=1) * math.sqrt(bars_per_session))
    adv = float(np.mean(volume) * bars_per_session)
    return ImpactModel(sigma_daily=sigma_daily, adv_shares=adv, k=k)


@dataclass(frozen=True)
class Fill:
    """Outcome of one order.

    ordered_qty / filled_qty: signed shares. ref_price: the bar open the order
    was filled against (USD). price: average fill price incl. slippage (USD).
    slippage_bps: realised, adverse positive. modeled_slippage_bps: the
    deterministic square-root part. commission_usd: fees charged. paper: true
    for shadow (paper) fills. status: filled | partial | rejected.
    """

    ordered_qty: int
    filled_qty: int
    ref_price: float
    price: float
    slippage_bps: float
    modeled_slippage_bps: float
    commission_usd: float
    paper: bool
    status: str


def fill_price(ref_price: float, qty: float, slippage_bps: float) -> float:
    """Price paid (buy) or received (sell) after adverse slippage, USD per share."""
    side = 1.0 if qty > 0 else -1.0
    return ref_price * (1.0 + side * slippage_bps * 1e-4)


def modeled_fill(qty: int, ref_price: float, impact: ImpactModel, paper: bool = False) -> Fill:
    """The simulated-book fill: always fully filled at ``ref_price`` plus modelled slippage, IBKR fees."""
    bps = impact.bps(qty)
    px = fill_price(ref_price, qty, bps) if qty else ref_price
    return Fill(
        ordered_qty=qty,
        filled_qty=qty,
        ref_price=ref_price,
        price=px,
        slippage_bps=bps,
        modeled_slippage_bps=bps,
        commission_usd=ibkr_commission(qty, px),
        paper=paper,
        status="filled",
    )


class SimBroker:
    """Fills market orders at the next bar's open plus slippage.

    Slippage = modelled square-root impact (:func:`sqrt_impact_bps`, Almgren
    et al. 2005 / Grinold-Kahn square-root law) times a seeded log-normal
    factor with mean 1 (``noise_sigma`` is its log standard deviation), so
    realised slippage differs from modelled fill by fill but not on average.
    Commission: IBKR Pro tiered US stocks (:func:`ibkr_commission`).
    An order is filled up to ``participation`` of the fill bar's volume; the
    rest is cancelled (status ``partial``, or ``rejected`` if nothing filled).
    """

    def __init__(
        self,
        impact: ImpactModel,
        *,
        seed: int = 0,
        noise_sigma: float = 0.5,
        participation: float = 0.1,
        paper: bool = False,
    ) -> None:
        self.impact = impact
        self.noise_sigma = noise_sigma
        self.participation = participation
        self.paper = paper
        self._rng = np.random.default_rng(seed)

    def execute(self, qty: int, bar_open: float, bar_volume: float) -> Fill:
        """Fill ``qty`` signed shares against a bar with open ``bar_open`` (USD) and ``bar_volume`` shares."""
        if qty == 0:
            raise ValueError("cannot execute an order of zero shares")
        cap = math.floor(self.participation * max(bar_volume, 0.0))
        filled = int(math.copysign(min(abs(qty), cap), qty)) if cap > 0 else 0
        if filled == 0:
            return Fill(qty, 0, bar_open, bar_open, 0.0, 0.0, 0.0, self.paper, "rejected")
        modeled = self.impact.bps(filled)
        s = self.noise_sigma
        factor = math.exp(s * float(self._rng.standard_normal()) - 0.5 * s * s)
        realised = modeled * factor
        px = fill_price(bar_open, filled, realised)
        return Fill(
            ordered_qty=qty,
            filled_qty=filled,
            ref_price=bar_open,
            price=px,
            slippage_bps=realised,
            modeled_slippage_bps=modeled,
            commission_usd=ibkr_commission(filled, px),
            paper=self.paper,
            status="filled" if filled == qty else "partial",
        )
