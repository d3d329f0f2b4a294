"""ticker-gateway under test: writes its benchmark config overlay, starts it with
--config, waits for /readyz, samples its CPU time and RSS from /proc and a few
counters from /metrics, and stops it with SIGTERM. With a test CA (`--tls`) the
overlay adds `[tls]`, the port serves https and wss only, and the driver's own
requests verify the gateway against that CA."""

from __future__ import annotations

import os
import resource
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .tls import TestCa

CLK_TCK = os.sysconf("SC_CLK_TCK")  # same as `getconf CLK_TCK` (100 here)
UNIVERSE_ROWS = 500


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_universe(repo: Path, tmp: Path) -> Path:
    """The first 500 rows of feeds/universe.tsv, header kept."""
    lines = (repo / "feeds" / "universe.tsv").read_text().splitlines(keepends=True)
    path = tmp / "universe-500.tsv"
    path.write_text("".join(lines[: UNIVERSE_ROWS + 1]))
    return path


def write_overlay(tmp: Path, universe: Path, port: int, quotes_per_sec: float,
                  max_rate: float, workers: int, start_delay: float = 0.0,
                  tls: TestCa | None = None, webrtc_loss: float | None = None,
                  feeds: str | None = None, extra: str = "") -> Path:
    """The benchmark overlay: big connection limit, rates that never throttle
    (unless the client asks), ingest stamps on, one evenly spread sim feed that
    starts moving `start_delay` seconds after start-up (or the `[[feeds]]` in
    `feeds`); `[tls]` with `tls`; with `webrtc_loss`, WebRTC on a free UDP port,
    dropping that share of the datagrams it sends (`webrtc.test_drop_fraction`);
    `extra` appended (more tables)."""
    sim = f"""# An overlay's [[feeds]] list replaces the default one.
[[feeds]]
name = "sim"
kind = "sim"
quotes_per_sec = {quotes_per_sec:.1f}
start_delay = "{start_delay:.3f}s"
hot_fraction = 1.0
hot_share = 1.0
seed = 42
"""
    text = f"""# Written by bench/run.py for one benchmark run.
[server]
host = "127.0.0.1"
port = {port}
workers = {workers}
max_connections = 20000

[session]
max_rate = {max_rate:.1f}
default_rate = {max_rate:.1f}

[bench]
ingest_stamp = true

[universe]
file = "{universe}"

{feeds if feeds is not None else sim}{extra}"""
    if tls is not None:
        text += tls.overlay()
    if webrtc_loss is not None:
        text += f"""
[webrtc]
enabled = true
udp_port = 0
test_drop_fraction = {webrtc_loss}
test_drop_seed = 1
"""
    path = tmp / f"gateway-{port}.toml"
    path.write_text(text)
    return path


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of process `pid` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK   # utime, stime


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The counters a sample reads from /metrics, summed over their label sets.
METRICS = {
    "ticker_feed_quotes_received_total": "quotes",
    # The peers' feed only (feed.mjs): its 5 ms timer's firings.
    "ticker_feed_ticks_total": "ticks",
    'ticker_messages_sent_total{type="update"}': "updates_sent",
    "ticker_updates_conflated_total": "conflated",
    "ticker_slow_consumer_closes_total": "slow_consumer_closes",
    "ticker_connections_rejected_total": "rejected",
    "ticker_feed_quotes_rejected_total": "rejected_quotes",
}

# A saturated server answers a scrape in a second or so (its workers' queues
# are long); Prometheus's own default timeout is 10 s.
METRICS_TIMEOUT_S = 10


@dataclass
class Sample:
    """One look at the gateway process."""
    t: float          # time.monotonic()
    cpu_s: float      # utime + stime
    rss_kib: int      # VmRSS
    metrics: dict     # selected /metrics counters (empty when not scraped)
    threads: dict     # CPU seconds per thread, keyed "name#tid"
    sys_s: float = 0.0  # stime alone: the kernel's share of cpu_s
    # When the /metrics answer arrived (the counters are read just before it
    # is written; under load it can come a second or more after `t`).
    metrics_t: float = 0.0
    # Why /metrics was not read, when it was asked for and failed.
    metrics_error: str | None = None


class Gateway:
    """One gateway process."""

    # Plain unless __init__ says otherwise (the peers never serve TLS).
    tls: TestCa | None = None
    _ssl: ssl.SSLContext | None = None

    def __init__(self, binary: Path, config: Path, port: int, log: Path,
                 prefix: list[str] | None = None, ws_path: str = "/ws",
                 tls: TestCa | None = None):
        """`prefix` goes before the command (the driver's `taskset -c 0` under
        --pin; taskset execs the command, so the PID sampled is the gateway's);
        `ws_path` is where its clients connect; `tls`: the CA of the certificate
        the config serves (https and wss, verified against it)."""
        self.port = port
        self.ws_path = ws_path
        self.tls = tls
        self._ssl = tls.context() if tls is not None else None
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [*(prefix or []), str(binary), "--config", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_raise_nofile,
        )

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{self.ws_path}"

    @property
    def ca(self) -> Path | None:
        """The CA file clients verify the gateway with (None: plain ws)."""
        return self.tls.ca if self.tls else None

    def _get(self, path: str, timeout: float):
        return urllib.request.urlopen(self.http + path, timeout=timeout, context=self._ssl)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode} during start-up:\n"
                                   + self.log_tail())
            try:
                with self._get("/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError("gateway not ready in time:\n" + self.log_tail())

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(user, kernel) CPU seconds so far."""
        return cpu_split(self.proc.pid)

    def thread_cpu(self) -> dict:
        """CPU seconds per thread ("name#tid"), to see whether one thread saturates."""
        out: dict = {}
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[f"{name}#{task.name}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def metrics(self) -> dict:
        """Sums of the counters the report uses, over all label sets (empty
        when the scrape failed)."""
        return self._metrics()[0]

    def _metrics(self) -> tuple[dict, str | None]:
        """`metrics`, and why the scrape failed (None when it did not)."""
        out: dict = {}
        try:
            with self._get("/metrics", timeout=METRICS_TIMEOUT_S) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError) as e:
            return out, f"{type(e).__name__}: {e}"
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name_labels, value = line.rsplit(" ", 1)
            name = name_labels.split("{", 1)[0]
            for key, label in METRICS.items():
                key_name, _, key_label = key.partition("{")
                if name == key_name and (not key_label or key_label.rstrip("}") in name_labels):
                    out[label] = out.get(label, 0.0) + float(value)
        return out, None

    def sample(self, with_metrics: bool = True) -> Sample:
        t = time.monotonic()
        user, kernel = self.cpu_split()
        rss, threads = self.rss_kib(), self.thread_cpu()
        metrics, error = self._metrics() if with_metrics else ({}, None)
        return Sample(t, user + kernel, rss, metrics, threads, kernel,
                      metrics_t=time.monotonic(), metrics_error=error)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
