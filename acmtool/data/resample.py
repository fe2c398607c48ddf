"""Polyphase resampling in numpy: the same filter and alignment as scipy.signal.resample_poly
(a Kaiser-windowed sinc, beta 5, 10 zero crossings a side at the lower of the two rates), so
acmtool needs no scipy for audio. 8 kHz -> 16 kHz is up 2, down 1; 44.1 kHz -> 16 kHz is up 160,
down 441.

Each output sample m sits at t = m * down on the upsampled grid; the input samples within the
filter's reach of t are x[i_lo(m) + l], weighted by one of `up` phases of the filter. Outputs
m0, m0 + up, m0 + 2 up, ... share a phase and step `down` inputs apart, so each phase is one
matrix-vector product over a strided window view: no zero-stuffed signal is ever built."""
from __future__ import annotations

from math import gcd

import numpy as np

KAISER_BETA = 5.0
ZERO_CROSSINGS = 10  # a side, at the lower rate: about 60 dB stopband, as scipy's default


def resampled_length(n: int, orig_rate: int, target_rate: int) -> int:
    up, down = _ratio(orig_rate, target_rate)
    return -(-n * up // down)  # ceil(n * up / down), as resample_poly


def _ratio(orig_rate: int, target_rate: int) -> tuple[int, int]:
    g = gcd(int(orig_rate), int(target_rate))
    return int(target_rate) // g, int(orig_rate) // g


def lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing (and anti-imaging) filter on the upsampled grid, DC gain `up`."""
    half = ZERO_CROSSINGS * max(up, down)
    n = np.arange(-half, half + 1, dtype=np.float64)
    cutoff = 1.0 / max(up, down)  # of the upsampled grid's Nyquist frequency
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(2 * half + 1, KAISER_BETA)
    return h * (up / h.sum())


def resample(x: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """A 1-D signal at orig_rate, resampled to target_rate (float32 out, float64 inside)."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"resample takes a 1-D signal, got shape {x.shape}")
    up, down = _ratio(orig_rate, target_rate)
    if up == down:
        return x.astype(np.float32, copy=False)
    h = lowpass(up, down)
    half = (len(h) - 1) // 2
    n_out = resampled_length(len(x), orig_rate, target_rate)
    taps = -(-len(h) // up)  # inputs under the filter for one output
    # i_lo(m) = ceil((m * down - half) / up): the first input within reach of output m
    first = -((half - np.arange(up, dtype=np.int64) * down) // up)
    front = max(0, -int(first.min()))
    back = max(0, int(first.max()) + (n_out // up) * down + taps - len(x))
    padded = np.concatenate([np.zeros(front), x.astype(np.float64), np.zeros(back)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)
    h = np.concatenate([h, np.zeros(taps * up)])  # taps past the filter's end weigh 0
    y = np.empty(n_out, dtype=np.float64)
    for m0 in range(min(up, n_out)):
        # the offset of the first input's tap on the upsampled grid picks the phase; h is symmetric
        d = int(first[m0]) * up - (m0 * down - half)
        phase = h[d + up * np.arange(taps)]
        count = len(range(m0, n_out, up))
        start = int(first[m0]) + front
        y[m0::up] = windows[start:start + count * down:down] @ phase
    return y.astype(np.float32)
