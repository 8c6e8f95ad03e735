"""Per-link estimates of latency and throughput from the transfers a peer actually makes.

Every call to another peer is a sample ``(bytes moved, network seconds)``: the request and reply
bytes, and the call's wall time less what the callee reports it spent queued and computing. A
link is modelled as ``seconds = rtt + bytes / rate``. Delays only ever add to a sample (queueing
in the kernel, a busy event loop, the token bucket of a rate limiter), so the fit follows the
*lower envelope* of the samples rather than their mean:

- ``rtt`` is a low quantile of the seconds of the samples small enough that their transfer
  time is negligible next to it (or, when there are none, of all samples, less their transfer
  time at the current rate);
- ``rate`` is a high quantile of ``bytes / (seconds - rtt)`` over the samples whose transfer
  time clearly exceeds the round trip, where the rate can be seen at all, and among those only
  the largest (at least a quarter of the largest's size): a fixed cost the round trip does
  not hold (a larger frame's extra system calls, a token bucket's burst) weighs least on them. On a
  busy machine most calls wait for the CPU on either side, often several times the transfer
  itself, so the high quantile (not the median) is the link.

A shaper's burst (a token bucket lets its first tens of KiB through at once) would make a
probe read fast; the prober drains it first with a small call it does not measure
(``PRIME_BYTES``), so the probe sees the sustained rate.

Small transfers alone cannot reveal a fast link's rate (and a few KiB of share reply carry
fixed costs the round trip does not hold, so they read slow); a link with no recent sample of
at least half a probe gets a small, budgeted active probe (``needs_probe``), sized to take about
``PROBE_TARGET_S`` at the link's current estimate (``probe_bytes``, 256 KiB to 1 MiB; on a slow
link at most ``PROBE_MAX_S`` of transfer, down to 16 KiB, and probes spaced so that they take at
most ``PROBE_DUTY`` of the link's time: a 256 KiB probe every 30 s held a 1 Mbit/s link for 2.6 s,
long enough for the membership protocol's pings behind it to time out); on a fast
link a 256 KiB transfer hides in the round trip and its scheduling noise, so each probe of a
fast link is larger than the last until its transfer time shows (and one that showed no rate
at all is followed within ``PROBE_RETRY_S`` by the largest). A transfer that takes at least
``RATE_VISIBLE_S`` at the link's rate (a share on a slow link) shows the rate as well as a probe
and postpones the next one. Pure: time is passed in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SAMPLES = 64  # per link, newest kept
MAX_AGE_S = 120.0  # samples older than this are forgotten
SMALL_BYTES = 4096  # at most this: a round-trip sample
PROBE_BYTES = 256 * 1024  # the active probe's reply, at least: well past a typical tbf burst
PROBE_MAX_BYTES = 1024 * 1024  # ... and at most (what a peer sends back to one probe)
PROBE_TARGET_S = 0.05  # a probe's size: about this long at the link's current estimate
PROBE_MIN_BYTES = 16 * 1024  # a slow link's probe: at least this (past the prime, it is paced)
PROBE_MAX_S = 0.25  # ... and at most this long at the link's estimate
PROBE_DUTY = 0.02  # prime + probe take at most this share of a link's time (spaces them out)
RATE_VISIBLE_S = 0.05  # a transfer this long at the link's rate shows it (postpones a probe)
PRIME_BYTES = 64 * 1024  # the unmeasured call before a probe: drains a shaper's burst
PROBE_EVERY_S = 30.0
PROBE_RETRY_S = 5.0  # ... or this recent, when the last probe could not show the rate  # a link gets a probe when it has no rate sample this recent
RATE_MARGIN = 2.0  # a rate sample needs transfer time >= RATE_MARGIN x rtt
RTT_QUANTILE = 0.1
RATE_QUANTILE = 0.9
LARGE_FRACTION = 0.25  # rate samples: at least this fraction of the largest one's bytes (the
# probes of a fast link grow from PROBE_BYTES to PROBE_MAX_BYTES: both count)
RATE_SAMPLE_BYTES = PROBE_BYTES // 2  # a transfer at least this large postpones the next probe


@dataclass(frozen=True)
class Sample:
    at: float  # when it finished
    nbytes: int  # bytes moved, both directions
    seconds: float  # network time


@dataclass(frozen=True)
class LinkEstimate:
    bytes_per_s: float | None  # None until a sample could show the rate
    rtt_s: float
    age_s: float  # since the newest sample
    samples: int

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "bytes_per_s": None if self.bytes_per_s is None else round(self.bytes_per_s, 1),
            "rtt_s": round(self.rtt_s, 6),
            "age_s": round(self.age_s, 3),
            "samples": self.samples,
        }


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fit(samples: Iterable[Sample]) -> tuple[float, float | None]:
    """``(rtt_s, bytes_per_s or None)`` from samples (see the module's docstring)."""
    xs = list(samples)
    if not xs:
        raise ValueError("fit needs at least one sample")
    small = [s.seconds for s in xs if s.nbytes <= SMALL_BYTES]
    rtt = _quantile(small if small else [s.seconds for s in xs], RTT_QUANTILE)
    rate = None
    for _ in range(20):  # without small samples, alternate rtt and rate until they settle
        seen = [
            s
            for s in xs
            if s.nbytes > SMALL_BYTES and s.seconds - rtt >= RATE_MARGIN * max(rtt, 1e-4)
        ]
        big = LARGE_FRACTION * max((s.nbytes for s in seen), default=0)
        rates = [s.nbytes / (s.seconds - rtt) for s in seen if s.nbytes >= big]
        rate = _quantile(rates, RATE_QUANTILE) if rates else None
        if small or rate is None:
            break
        new = max(_quantile([s.seconds - s.nbytes / rate for s in xs], RTT_QUANTILE), 0.0)
        if abs(new - rtt) <= 1e-6:
            break
        rtt = new
    return max(rtt, 0.0), rate


class LinkEstimator:
    """One link's recent samples and their fit."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self._last_rate_sample = -math.inf

    def observe(self, nbytes: int, seconds: float, now: float) -> None:
        if nbytes < 0 or not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(
                f"a link sample needs nbytes >= 0 and seconds > 0, got {nbytes}, {seconds}"
            )
        if nbytes >= RATE_SAMPLE_BYTES or (nbytes > SMALL_BYTES and self._shows_rate(nbytes, now)):
            self._last_rate_sample = now
        self._samples.append(Sample(now, nbytes, seconds))

    def _shows_rate(self, nbytes: int, now: float) -> bool:
        """On a slow link a share-sized transfer takes long enough to show the rate itself."""
        est = self.estimate(now)
        if est is None or est.bytes_per_s is None:
            return False
        return nbytes / est.bytes_per_s >= max(RATE_MARGIN * est.rtt_s, RATE_VISIBLE_S)

    def _recent(self, now: float) -> list[Sample]:
        while self._samples and now - self._samples[0].at > MAX_AGE_S:
            self._samples.popleft()
        return list(self._samples)

    def estimate(self, now: float) -> LinkEstimate | None:
        xs = self._recent(now)
        if not xs:
            return None
        rtt, rate = fit(xs)
        return LinkEstimate(rate, rtt, max(now - xs[-1].at, 0.0), len(xs))

    def needs_probe(self, now: float) -> bool:
        since = now - self._last_rate_sample
        if since >= PROBE_RETRY_S and self._rate_hidden(now):
            return True
        return since >= self.probe_every_s(now)

    def probe_every_s(self, now: float) -> float:
        """``PROBE_EVERY_S``, or longer where a probe's link time would exceed ``PROBE_DUTY``."""
        est = self.estimate(now)
        if est is None or est.bytes_per_s is None:
            return PROBE_EVERY_S
        busy = (PRIME_BYTES + self.probe_bytes(now)) / est.bytes_per_s
        return max(PROBE_EVERY_S, busy / PROBE_DUTY)

    def _rate_hidden(self, now: float) -> bool:
        """A probe was made, but the link moved it too fast for its round trip to show."""
        if self._last_rate_sample == -math.inf:
            return False
        est = self.estimate(now)
        return est is not None and est.bytes_per_s is None

    def probe_bytes(self, now: float) -> int:
        """The next probe's size (see the module's docstring)."""
        if self._rate_hidden(now):
            return PROBE_MAX_BYTES
        est = self.estimate(now)
        if est is None or est.bytes_per_s is None:
            return PROBE_BYTES
        if PROBE_BYTES / est.bytes_per_s > PROBE_MAX_S:  # a slow link: keep it short
            return int(max(PROBE_MIN_BYTES, PROBE_MAX_S * est.bytes_per_s))
        return int(min(max(PROBE_BYTES, PROBE_TARGET_S * est.bytes_per_s), PROBE_MAX_BYTES))

    @property
    def last_rate_sample(self) -> float:
        return self._last_rate_sample


class LinkBook:
    """This peer's estimators, one per peer it talks to."""

    def __init__(self) -> None:
        self._links: dict[str, LinkEstimator] = {}

    def observe(self, peer: str, nbytes: int, seconds: float, now: float) -> None:
        self._links.setdefault(peer, LinkEstimator()).observe(nbytes, seconds, now)

    def estimate(self, peer: str, now: float) -> LinkEstimate | None:
        est = self._links.get(peer)
        return None if est is None else est.estimate(now)

    def needs_probe(self, peer: str, now: float) -> bool:
        est = self._links.get(peer)
        return est is None or est.needs_probe(now)

    def probe_bytes(self, peer: str, now: float) -> int:
        est = self._links.get(peer)
        return PROBE_BYTES if est is None else est.probe_bytes(now)

    def last_rate_sample(self, peer: str) -> float:
        est = self._links.get(peer)
        return -math.inf if est is None else est.last_rate_sample

    def estimates(self, now: float) -> dict[str, LinkEstimate]:
        out = {}
        for name in sorted(self._links):
            est = self._links[name].estimate(now)
            if est is not None:
                out[name] = est
        return out

    def forget(self, peer: str) -> None:
        self._links.pop(peer, None)
