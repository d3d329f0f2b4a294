"""A fleet of ticker-loadgen processes run as one: each gets a share of the
clients and its own source address 127.0.0.(2+i); all of them ramp up, then the
driver starts their warmup together (--sync-stdin), follows their progress events
(JSON lines on stderr), lets them close their clients once it has looked at the
server after the window, and merges their JSON reports."""

from __future__ import annotations

import json
import math
import queue
import subprocess
import threading
import time
from pathlib import Path

# Fields of a loadgen report that add up across processes.
SUMMED = [
    "clients", "updates", "snapshots", "error_msgs", "frames", "bytes",
    "updates_per_sec", "frames_per_sec", "bytes_per_sec",
    "connects", "connects_measured", "connects_per_sec",
    "cycles_measured", "cycles_per_sec",
    "open_at_measure_start", "subscribed_at_measure_start", "open_at_end", "subscribed_at_end",
    "loadgen_cpu_s", "loadgen_cpu_s_measured",
]
HISTOGRAMS = ["latency_ms", "connect_ms", "all_snapshots_ms"]


class Fleet:
    """P loadgen processes sharing `clients` between them."""

    def __init__(self, binary: Path, tmp: Path, procs: int, clients: int, url: str,
                 extra: list[str], connect_rate: float, seed: int = 1,
                 prefix: list[str] | None = None):
        """`prefix` goes before each command (the driver's `taskset -c 1` under --pin)."""
        self.events: queue.Queue = queue.Queue()
        self.procs: list[subprocess.Popen] = []
        self.outs: list[Path] = []
        self.stderr_tails: list[list[str]] = []
        procs = max(1, min(procs, clients))
        for i in range(procs):
            share = clients // procs + (1 if i < clients % procs else 0)
            out = tmp / f"loadgen-{i}.json"
            cmd = [
                *(prefix or []), str(binary), "--url", url, "--clients", str(share),
                "--source-ips", f"127.0.0.{2 + i}",
                "--connect-rate", f"{connect_rate / procs:.3f}",
                "--seed", str(seed + i), "--json-out", str(out), "--sync-stdin", *extra,
            ]
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            tail: list[str] = []
            threading.Thread(target=self._follow, args=(i, p, tail), daemon=True).start()
            self.procs.append(p)
            self.outs.append(out)
            self.stderr_tails.append(tail)
        self.seen: dict[str, list[dict]] = {}

    def _follow(self, i: int, p: subprocess.Popen, tail: list[str]) -> None:
        assert p.stderr is not None
        for line in p.stderr:
            line = line.rstrip("\n")
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                ev = None
            if isinstance(ev, dict) and "event" in ev:
                ev["proc"] = i
                ev["t"] = time.monotonic()
                self.events.put(ev)
            else:
                tail.append(line)
                del tail[:-20]
        self.events.put({"event": "exit", "proc": i, "t": time.monotonic()})

    def wait_all(self, name: str, timeout: float) -> list[dict]:
        """Blocks until every process has emitted event `name`."""
        got = self.seen.setdefault(name, [])
        deadline = time.monotonic() + timeout
        while len({e["proc"] for e in got}) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"loadgen: no '{name}' from every process within {timeout:.0f} s"
                                   + self._tails())
            try:
                ev = self.events.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if ev["event"] == "exit" and name != "exit":
                code = self.procs[ev["proc"]].wait()
                if code != 0:
                    raise RuntimeError(f"loadgen {ev['proc']} exited with {code}" + self._tails())
            self.seen.setdefault(ev["event"], []).append(ev)
        return got

    def go(self) -> None:
        """Ends every process's wait: the one after ramp-up, then the one after
        the measured window."""
        for p in self.procs:
            assert p.stdin is not None
            try:
                p.stdin.write("go\n")
                p.stdin.flush()
            except BrokenPipeError:
                # It exited (finish reports how).
                pass

    def finish(self, timeout: float = 60.0) -> dict:
        """Lets every process close its clients (they wait after the measured
        window, see `go`), waits for it and returns the merged report."""
        self.go()
        reports = []
        for i, p in enumerate(self.procs):
            code = p.wait(timeout)
            if code != 0:
                raise RuntimeError(f"loadgen {i} exited with {code}" + self._tails())
            reports.append(json.loads(self.outs[i].read_text()))
        return merge(reports)

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def _tails(self) -> str:
        return "".join(f"\n  [loadgen {i}] " + "\n  ".join(t) for i, t in enumerate(self.stderr_tails) if t)


def merge(reports: list[dict]) -> dict:
    """Adds up counts and rates, merges histogram buckets exactly, keeps the rest
    from the first report."""
    merged = {k: v for k, v in reports[0].items() if k not in HISTOGRAMS}
    merged["processes"] = len(reports)
    for k in SUMMED:
        merged[k] = sum(r.get(k, 0) for r in reports)
    for k in ("errors", "closes"):
        total: dict = {}
        for r in reports:
            for code, n in r.get(k, {}).items():
                total[code] = total.get(code, 0) + n
        merged[k] = total
    width = max(len(r.get("updates_per_second_timeline", [])) for r in reports)
    merged["updates_per_second_timeline"] = [
        sum(r["updates_per_second_timeline"][i] for r in reports
            if i < len(r.get("updates_per_second_timeline", [])))
        for i in range(width)
    ]
    merged["duration_s"] = max(r["duration_s"] for r in reports)
    merged["ramp_s"] = max(r["ramp_s"] for r in reports)
    merged["loadgen_peak_rss_kib"] = sum(r.get("loadgen_peak_rss_kib", 0) for r in reports)
    merged["source_ips"] = [ip for r in reports for ip in r.get("source_ips", [])]
    for h in HISTOGRAMS:
        buckets: dict[int, int] = {}
        for r in reports:
            for value, count in r.get(h, {}).get("buckets_us", []):
                buckets[value] = buckets.get(value, 0) + count
        merged[h] = percentiles(buckets)
    return merged


def percentiles(buckets: dict[int, int]) -> dict:
    """p50/p90/p99/p99.9/max (ms) of a histogram given as {value_us: count}."""
    total = sum(buckets.values())
    out: dict = {"count": total}
    if total == 0:
        return out | {"p50": None, "p90": None, "p99": None, "p999": None, "max": None}
    values = sorted(buckets)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
        rank = max(1, math.ceil(q * total))
        seen = 0
        for v in values:
            seen += buckets[v]
            if seen >= rank:
                out[name] = v / 1000.0
                break
    out["max"] = values[-1] / 1000.0
    out["mean"] = sum(v * c for v, c in buckets.items()) / total / 1000.0
    return out
