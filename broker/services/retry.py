"""When to try a failed delivery again: exponential backoff with jitter, Retry-After honoured."""

from __future__ import annotations

import random


def next_delay(attempt: int, *, base: float, cap: float, retry_after: float | None = None,
               rng: random.Random | None = None) -> float:
    """Seconds to wait after the given (1-based) failed attempt.

    "Equal jitter": half the exponential step is fixed and half random, so retries spread
    out without ever collapsing to zero; a back office's Retry-After is a floor.
    """
    step = min(cap, base * 2 ** max(0, attempt - 1))
    delay = step / 2 + (rng or random).uniform(0, step / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
