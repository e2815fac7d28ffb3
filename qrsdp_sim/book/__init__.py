"""Order-book reconstruction from record streams."""

from qrsdp_sim.book.replay import (
    INPUT_ERRORS,
    NO_PRICE,
    BookReplayError,
    BookStates,
    OrderBook,
    ReplayFlag,
    replay_book,
)

__all__ = [
    "INPUT_ERRORS",
    "NO_PRICE",
    "BookReplayError",
    "BookStates",
    "OrderBook",
    "ReplayFlag",
    "replay_book",
]
