"""Resilience for provider calls: retry -> circuit breaker -> bulkhead -> rate limiter -> HTTP.

Hand-rolled state machines on an injected ``Clock``; they do no I/O of their own.
"""

from enrichctl.resilience.breaker import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    counts_as_failure,
)
from enrichctl.resilience.bulkhead import Bulkhead, BulkheadFull
from enrichctl.resilience.clock import Clock, SystemClock
from enrichctl.resilience.ratelimit import RateLimiter, parse_retry_after
from enrichctl.resilience.registry import ResilienceRegistry
from enrichctl.resilience.retry import RetryPolicy, current_attempt, is_retryable
from enrichctl.resilience.stack import ResilientCaller

__all__ = [
    "BreakerState",
    "Bulkhead",
    "BulkheadFull",
    "CircuitBreaker",
    "CircuitOpen",
    "Clock",
    "RateLimiter",
    "ResilienceRegistry",
    "ResilientCaller",
    "RetryPolicy",
    "SystemClock",
    "counts_as_failure",
    "current_attempt",
    "is_retryable",
    "parse_retry_after",
]
