"""What the link measures (:meth:`OdtClient.link_stats`): counters and round-trip percentiles,
kept apart so adding a counter touches neither the codec nor the retransmission logic."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .framing import FrameErrorKind


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass(frozen=True)
class LinkStats:
    """A snapshot of the client's counters (see :meth:`OdtClient.link_stats`)."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0
    #: Stop-and-wait requests sent again (timeout, corrupted frame, link loss).
    retries: int = 0
    #: Training frames sent more than once (go-back-N and lost-ack re-asks; a fragment counts
    #: when units it carries were sent before).
    retransmitted_frames: int = 0
    #: Training frames sent, ``TRAIN`` and ``TRAIN_FRAG``, and their bytes on the wire.
    train_frames_sent: int = 0
    train_bytes_sent: int = 0
    #: ``TRAIN_FRAG`` frames sent and ``FRAG_ACK`` received (§2.1).
    frags_sent: int = 0
    frag_acks: int = 0
    #: Switches of the training stream between whole ``TRAIN`` frames and fragments.
    mode_switches: int = 0
    go_backs: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    truncated_frames: int = 0
    oversized_frames: int = 0
    #: Frames with a good CRC but a bad version, type or length.
    bad_packets: int = 0
    #: ``ERROR(BAD_FRAME)`` answers: the co-processor received a corrupted frame.
    remote_frame_errors: int = 0
    out_of_order: int = 0
    no_session: int = 0
    duplicate_acks: int = 0
    stale_responses: int = 0
    reconnects: int = 0
    handshakes: int = 0
    #: ``boot_count`` changes seen in ``INFO``: the co-processor restarted.
    coprocessor_resets: int = 0
    samples_queued: int = 0
    samples_acked: int = 0
    samples_failed: int = 0
    rtt_count: int = 0
    #: Stop-and-wait round trips (first attempts only), milliseconds.
    rtt_p50_ms: float = math.nan
    rtt_p99_ms: float = math.nan
    #: Training frame send → acknowledgement (first transmissions only), milliseconds.
    train_rtt_p50_ms: float = math.nan
    train_rtt_p99_ms: float = math.nan

    @property
    def frame_errors(self) -> int:
        """Received frames that did not decode."""
        return (
            self.crc_errors
            + self.cobs_errors
            + self.truncated_frames
            + self.oversized_frames
            + self.bad_packets
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly; NaN percentiles become ``None``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = None if isinstance(v, float) and math.isnan(v) else v
        out["frame_errors"] = self.frame_errors
        return out


COUNTER_NAMES = tuple(f.name for f in fields(LinkStats) if f.type in ("int", int))


class Counters:
    def __init__(self, rtt_keep: int = 20000) -> None:
        self.c: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.rtt: deque[float] = deque(maxlen=rtt_keep)
        self.train_rtt: deque[float] = deque(maxlen=rtt_keep)

    def inc(self, name: str, n: int = 1) -> None:
        self.c[name] += n

    def snapshot(self) -> LinkStats:
        c = dict(self.c)
        c["rtt_count"] = len(self.rtt)
        rtt = list(self.rtt)
        trtt = list(self.train_rtt)
        return LinkStats(
            **c,
            rtt_p50_ms=_percentile(rtt, 50) * 1e3,
            rtt_p99_ms=_percentile(rtt, 99) * 1e3,
            train_rtt_p50_ms=_percentile(trtt, 50) * 1e3,
            train_rtt_p99_ms=_percentile(trtt, 99) * 1e3,
        )


FRAME_ERROR_COUNTER = {
    FrameErrorKind.COBS: "cobs_errors",
    FrameErrorKind.CRC: "crc_errors",
    FrameErrorKind.TRUNCATED: "truncated_frames",
    FrameErrorKind.OVERSIZED: "oversized_frames",
    FrameErrorKind.BAD_VERSION: "bad_packets",
    FrameErrorKind.UNKNOWN_TYPE: "bad_packets",
    FrameErrorKind.BAD_LENGTH: "bad_packets",
}
