"""What ``qrsdp listen`` prints: one line per message, and with ``--book`` every best bid/offer change.

Lines are (sequence number, 0 for a message / 1 for the BBO change it caused, text), so a caller can
sort a batch's lines into feed order.
"""

from __future__ import annotations

import numpy as np

from qrsdp_sim.book.replay import NO_PRICE, BookStates
from qrsdp_sim.itch.decoder import NAMES, A, C, D, E, F, R, S, U, X
from qrsdp_sim.itch.messages import EVENT_CODE_NAMES

Line = tuple[int, int, str]


def price_text(p: int) -> str:
    """A price in 1e-4 $ as ``dollars.dddd``."""
    return f"{p // 10000}.{p % 10000:04d}"


class Printer:
    def __init__(self, tick_size: int) -> None:
        self.tick_size = tick_size
        self.stocks: dict[int, str] = {}  # locate -> symbol, from the Stock Directory messages
        self._last_bbo: dict[int, tuple[int, int, int, int]] = {}

    def stock(self, locate: int) -> str:
        return self.stocks.get(locate, f"#{locate}")

    def ticks_text(self, ticks: int) -> str:
        return "-" if ticks == NO_PRICE else price_text(ticks * self.tick_size)

    def learn_directory(self, buf: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        for i in np.flatnonzero(cols["mtype"] == R):
            p = int(cols["moff"][i])
            self.stocks[int(cols["locate"][i])] = buf[p + 11 : p + 19].tobytes().decode("ascii", "replace").strip()

    def messages(self, buf: np.ndarray, cols: dict[str, np.ndarray], seqs: np.ndarray) -> list[Line]:
        mtype, loc, ref, side, shares = cols["mtype"], cols["locate"], cols["ref"], cols["side"], cols["shares"]
        price, match, code, moff = cols["price"], cols["match"], cols["code"], cols["moff"]
        lines: list[Line] = []
        for i in range(len(mtype)):
            t = int(mtype[i])
            s = int(seqs[i])
            head = f"[seq={s}] "
            if t in (A, F):
                p = int(moff[i])
                stock = buf[p + 24 : p + 32].tobytes().decode("ascii", "replace").strip()
                text = (f"{NAMES[t]} ref={int(ref[i])} side={chr(int(side[i]))} shares={int(shares[i])} "
                        f"stock={stock} price={price_text(int(price[i]))}")
            elif t == D:
                text = f"ORDER_DELETE ref={int(ref[i])} stock={self.stock(int(loc[i]))}"
            elif t == E:
                text = (f"ORDER_EXECUTED ref={int(ref[i])} shares={int(shares[i])} match={int(match[i])} "
                        f"stock={self.stock(int(loc[i]))}")
            elif t == S:
                c = bytes([int(code[i])])
                text = f"SYSTEM_EVENT code={c.decode('ascii', 'replace')} ({EVENT_CODE_NAMES.get(c, 'unknown')})"
            elif t == R:
                text = f"STOCK_DIRECTORY locate={int(loc[i])} stock={self.stock(int(loc[i]))}"
            elif t == X:
                text = f"ORDER_CANCEL ref={int(ref[i])} shares={int(shares[i])} stock={self.stock(int(loc[i]))}"
            elif t == C:
                text = (f"ORDER_EXECUTED_WITH_PRICE ref={int(ref[i])} shares={int(shares[i])} match={int(match[i])} "
                        f"price={price_text(int(price[i]))} stock={self.stock(int(loc[i]))}")
            elif t == U:
                text = (f"ORDER_REPLACE ref={int(ref[i])} new_ref={int(cols['ref2'][i])} shares={int(shares[i])} "
                        f"price={price_text(int(price[i]))} stock={self.stock(int(loc[i]))}")
            elif t == 0:
                text = "MALFORMED"
            else:
                text = f"{chr(t)} (not decoded)"
            lines.append((s, 0, head + text + "\n"))
        return lines

    def bbo(self, locate: int, states: BookStates, seqs: np.ndarray) -> list[Line]:
        """A line for every change of the stock's best bid/offer (price or size)."""
        cur = np.stack([states.bid_price.astype(np.int64), states.bid_qty, states.ask_price.astype(np.int64),
                        states.ask_qty], axis=1)
        prev = np.empty_like(cur)
        prev[1:] = cur[:-1]
        prev[0] = self._last_bbo.get(locate, (NO_PRICE - 1, -1, NO_PRICE - 1, -1))
        stock = self.stock(locate)
        lines: list[Line] = []
        for i in np.flatnonzero(np.any(cur != prev, axis=1)):
            bp, bq, ap, aq = (int(x) for x in cur[i])
            s = int(seqs[i])
            lines.append((s, 1, f"[seq={s}] BBO stock={stock} bid={self.ticks_text(bp)}x{bq} "
                                f"ask={self.ticks_text(ap)}x{aq}\n"))
        self._last_bbo[locate] = tuple(int(x) for x in cur[-1])
        return lines
