"""Rate limiter that keeps a provider's contract: never more than ``rate`` admissions in any rolling
``interval``.

The guarantee comes from a sliding-window log of admission times (a plain token bucket with a full
burst lets ``2 * rate`` through in one window: a full bucket, then the refill). ``burst`` only paces
on top of it: at most ``burst`` admissions back-to-back, after which admissions are spaced
``interval / rate`` apart (a token bucket of capacity ``burst`` refilled at ``rate / interval``).
``burst == rate`` (the default) uses the quota as fast as the contract allows; ``burst == 1``
spreads it evenly. Waiters are served first come, first served. A 429 calls ``pause`` and every
caller waits until the pause is over. ``rate == 0`` means unlimited (pauses still apply).

A 429 *without* ``Retry-After`` says the provider's real quota is below the configured one, and
nothing else: ``refused`` lowers the effective limit (AIMD-like) to the requests the provider
accepted in the last window (halving when it accepted none), at most once per refusal episode
(refusals of requests admitted before the last cut were sent under the old limit), and pauses
every caller for one request's share of the window. ``accepted`` counts a run of successes;
after ``RECOVERY_WINDOWS`` windows' worth the limit grows by one, back up to ``rate``. A probe
refused again at the same level makes the next recovery run twice as long, so a steady state
costs a 429 only now and then. The configured rate stays the ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections import deque
from email.utils import parsedate_to_datetime
from typing import Any

from enrichctl.resilience.clock import Clock

# Token arithmetic is float; after sleeping exactly the computed deficit the bucket may hold
# 0.9999999999 tokens. Anything this close counts as whole.
_TOKEN_EPSILON = 1e-9
_DELAY_SECONDS_RE = re.compile(r"^\d+(?:\.\d+)?$")
RECOVERY_WINDOWS = 3  # successes worth this many windows at the lowered limit before +1
PROBE_BACKOFF_MAX = 16  # a recovery run grows at most this many times longer
DECREASE = 0.5  # the cut when the provider accepted nothing in the window (no better estimate)
UNLIMITED_PAUSE_S = 1.0  # first pause of an unlimited limiter refused without Retry-After


def parse_retry_after(value: str, now_wall: float, *, cap: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    None when it is missing, invalid, negative or a date not in the future; capped at ``cap``.
    """
    text = value.strip() if value else ""
    if not text:
        return None
    if _DELAY_SECONDS_RE.match(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form may parse naive
            return None
        seconds = when.timestamp() - now_wall
        if seconds <= 0:
            return None
    if not math.isfinite(seconds):
        return None
    return min(seconds, cap) if cap is not None else seconds


class RateLimiter:
    """A sliding-window-log limiter with burst pacing, FIFO waiters and a shared pause."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        *,
        rate: int,
        interval: float = 60.0,
        burst: int | None = None,
        retry_after_cap: float = 300.0,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0 (0 = unlimited)")
        if interval <= 0:
            raise ValueError("interval must be positive")
        if retry_after_cap <= 0:
            raise ValueError("retry_after_cap must be positive")
        burst = rate if burst is None else burst
        if rate and not 1 <= burst <= rate:
            raise ValueError(f"burst must be between 1 and rate ({rate}), got {burst}")
        self.name = name
        self._clock = clock
        self.rate = rate
        self.interval = interval
        self.burst = burst if rate else 0
        self.retry_after_cap = retry_after_cap
        self._log: deque[float] = deque()  # admission times, oldest first; at most `rate` entries
        self._bucket = float(self.burst)
        self._bucket_at = clock.monotonic()
        self._paused_until = -math.inf
        self._lock = asyncio.Lock()  # FIFO: the holder is the head of the line
        self._waiting = 0
        self._admitted = 0
        self._pauses = 0
        # Adaptive limit: what the provider really allows, as far as its refusals tell.
        self._limit = rate
        self._accepted: deque[float] = deque()  # admission times of requests answered, in window
        self._run = 0  # successes since the limit last changed
        self._probe_factor = 1
        self._refused_limit: int | None = None  # the last limit the provider refused
        self._cut_at = -math.inf
        self._unlimited_pause = 0.0
        self._refused = 0
        self._refused_bare = 0  # of which without Retry-After
        self._last_refused_wall: float | None = None
        self._cuts = 0

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    @property
    def limit(self) -> int:
        """The effective limit per window (``rate`` until the provider refuses; 0 = unlimited)."""
        return self._limit

    async def acquire(self, tokens: int = 1) -> float:
        """Wait for a turn and take ``tokens`` admissions; ValueError when more than can ever fit.
        Returns the admission instant (monotonic), which ``accepted``/``refused`` take back.

        Cancelled while waiting, it takes nothing and the next waiter moves up.
        """
        if tokens < 1 or (not self.unlimited and tokens > self.burst):
            raise ValueError(
                f"cannot acquire {tokens} tokens from limiter {self.name!r} (capacity {self.burst})"
            )
        self._waiting += 1
        try:
            async with self._lock:
                # Only the head of the line sleeps, and only on time: nothing but its own admission
                # makes room, and pauses only ever get longer, so no wake-up can be missed.
                # A lowered limit or a new pause only lengthens the wait, and the loop re-reads
                # both after every sleep; a raised limit merely wakes the head a little late.
                while (delay := self._delay(self._clock.monotonic(), tokens)) > 0:
                    await self._clock.sleep(delay)
                now = self._clock.monotonic()
                self._admit(now, tokens)
                return now
        finally:
            self._waiting -= 1

    def accepted(self, admitted_at: float) -> None:
        """The provider answered a request admitted at ``admitted_at``: one more success."""
        self._unlimited_pause = 0.0
        if self.unlimited:
            return
        now = self._clock.monotonic()
        while self._accepted and self._accepted[0] + self.interval <= now:
            self._accepted.popleft()
        self._accepted.append(admitted_at)
        self._run += 1
        if self._limit < self.rate and self._run >= RECOVERY_WINDOWS * self._limit * self._probe_factor:
            if self._refused_limit is not None and self._limit >= self._refused_limit:
                # A whole run above the level refused before: that refusal is history.
                self._refused_limit, self._probe_factor = None, 1
            self._limit += 1
            self._run = 0

    def refused(self, admitted_at: float, retry_after: float | None) -> float:
        """The provider answered 429 to a request admitted at ``admitted_at``; returns the pause.

        With ``retry_after`` the provider said when: pause that long. Without, lower the limit
        (once per episode) and pause every caller for one request's share of the window.
        """
        now = self._clock.monotonic()
        self._refused += 1
        self._last_refused_wall = self._clock.wall()
        if retry_after is not None:
            return self.pause(retry_after)
        self._refused_bare += 1
        if self.unlimited:
            # No rate to lower: back off, doubling while refusals continue.
            self._unlimited_pause = min(max(UNLIMITED_PAUSE_S, 2 * self._unlimited_pause), self.interval)
            return self.pause(self._unlimited_pause)
        with contextlib.suppress(ValueError):
            self._log.remove(admitted_at)  # it did not count against the provider's quota
        if admitted_at >= self._cut_at:
            self._cut(now)
        return self.pause(self.interval / self._limit)

    def _cut(self, now: float) -> None:
        while self._accepted and self._accepted[0] + self.interval <= now:
            self._accepted.popleft()
        took = len(self._accepted)  # what the provider accepted in its window, then refused
        old = self._limit
        target = took if took > 0 else math.floor(old * DECREASE)
        self._limit = max(1, min(old - 1, target))
        if self._refused_limit is not None and old >= self._refused_limit:
            self._probe_factor = min(self._probe_factor * 2, PROBE_BACKOFF_MAX)
        self._refused_limit = old
        self._bucket = min(self._bucket_level(now), float(self._capacity()))
        self._bucket_at = now
        self._run = 0
        self._cut_at = now
        self._cuts += 1

    def pause(self, seconds: float | None) -> float:
        """Hold every caller for ``seconds`` (capped); returns the pause applied, 0 when ignored.

        A pause never shortens one already in force.
        """
        if seconds is None or not math.isfinite(seconds) or seconds <= 0:
            return 0.0
        seconds = min(seconds, self.retry_after_cap)
        self._paused_until = max(self._paused_until, self._clock.monotonic() + seconds)
        self._pauses += 1
        return seconds

    def _delay(self, now: float, tokens: int) -> float:
        """Seconds until ``tokens`` may be admitted at ``now`` (0 = now)."""
        delay = self._paused_until - now
        if self.unlimited:
            return delay
        # An entry leaves the window when t + interval <= now; the same expression gives the
        # deadline below, so a waiter woken at the deadline always finds the room it waited for.
        while self._log and self._log[0] + self.interval <= now:
            self._log.popleft()
        # More tokens than a lowered limit: wait for an empty window and a full bucket.
        tokens = min(tokens, self._limit)
        excess = len(self._log) + tokens - self._limit
        if excess > 0:
            delay = max(delay, self._log[excess - 1] + self.interval - now)
        deficit = tokens - self._bucket_level(now)
        if deficit > _TOKEN_EPSILON:
            delay = max(delay, deficit * self.interval / self._limit)
        return delay

    def _admit(self, now: float, tokens: int) -> None:
        if not self.unlimited:
            self._bucket = max(0.0, self._bucket_level(now) - tokens)
            self._bucket_at = now
            self._log.extend([now] * tokens)
        self._admitted += tokens

    def _capacity(self) -> int:
        return min(self.burst, self._limit)

    def _bucket_level(self, now: float) -> float:
        refill = (now - self._bucket_at) * self._limit / self.interval
        return min(float(self._capacity()), self._bucket + refill)

    # -- reading without changing -------------------------------------------------------------

    def paused_for(self) -> float:
        """Seconds left of the current pause (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock.monotonic())

    def tokens_available(self) -> int | None:
        """Admissions possible right now without waiting; None when unlimited and not paused."""
        now = self._clock.monotonic()
        if self._paused_until > now:
            return 0
        if self.unlimited:
            return None
        in_window = sum(1 for t in self._log if t + self.interval > now)
        bucket = math.floor(self._bucket_level(now) + _TOKEN_EPSILON)
        return max(0, min(self._limit - in_window, bucket))

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view of the limiter; reading it changes nothing."""
        paused_for = self.paused_for()
        return {
            "rate": self.rate,
            "interval": self.interval,
            "burst": self.burst,
            "unlimited": self.unlimited,
            "tokens": self.tokens_available(),
            "waiting": self._waiting,
            "paused_for": round(paused_for, 3),
            "paused_until": round(self._clock.wall() + paused_for, 3) if paused_for else None,
            "admitted": self._admitted,
            "pauses": self._pauses,
            "retry_after_cap": self.retry_after_cap,
            # What the provider's refusals taught: the limit in force, and when it last refused.
            "effective_rate": None if self.unlimited else self._limit,
            "refused": self._refused,
            "refused_without_retry_after": self._refused_bare,
            "last_refused_at": round(self._last_refused_wall, 3) if self._last_refused_wall else None,
            "rate_cuts": self._cuts,
        }
