"""Progress on the console: done/total with rate and ETA (the PCA fit, evaluation, predict.py),
and the training loop's images per second over its recent log intervals."""
import time
from collections import deque


class Progress:
    """A one-line progress printer with rate and ETA, printing at most every `every` seconds
    (and always at the end): "LABEL: done/total UNIT (rate/s, ETA 1m05s)"."""

    def __init__(self, label, unit="", every=2.0, stream=None):
        self.label, self.unit, self.every, self.stream = label, unit, every, stream
        self.start = self.last = time.time()

    def __call__(self, done, total):
        now = time.time()
        if now - self.last < self.every and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        unit = f" {self.unit}" if self.unit else ""
        print(f"{self.label}: {done}/{total}{unit} ({rate:.1f}/s, ETA {format_seconds(eta)})",
              file=self.stream, flush=True)


class RecentRate:
    """Images per second over the last `window` log intervals, not since start-up (a slow first
    batch, W's fit or a validation would otherwise skew the rate and the ETA for the whole run)."""

    def __init__(self, window=10, start=None):
        self.points = deque([(time.time() if start is None else start, 0)], maxlen=window + 1)

    def update(self, now, images_seen):
        self.points.append((now, images_seen))
        (t0, n0), (t1, n1) = self.points[0], self.points[-1]
        return (n1 - n0) / max(t1 - t0, 1e-9)


def format_seconds(seconds):
    """A duration as "1h05m" or "4m07s"; "?" for an unknown (infinite) one."""
    if seconds == float("inf"):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
