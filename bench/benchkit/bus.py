"""The bus scenarios (PROTOCOL.md section 11): gateways on a real nats-server.

- `bus`: a publisher gateway (the sim feed at the step's rate, `[publish]` with a
  JetStream last-value stream) → nats-server → an edge gateway (a `nats` feed
  following demand) serving the load generator's clients: the fanout-10k shape
  one hop further. CPU of every process.
- `firehose`: `ticker-buspub` publishes as many full quotes per second as the
  step asks (round-robin over the 500 symbols) → nats-server → an edge following
  every symbol (`follow = "all"`) with 1,000 clients. The edge runs alone on CPU
  0 (`taskset -c 0`), everything else on CPU 1: what one core of an edge ingests.

The edge is the `Gateway` the driver measures as usual (its clients, CPU, RSS);
the rig adds the other processes' CPU, the edge's ingest rate and nats-server's
slow-consumer count to the step.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from .gateway import Gateway, cpu_split, Sample, _raise_nofile, free_port, write_overlay

SCENARIOS = ("bus", "firehose")
STREAM = "QUOTES"


def nats_binary() -> str:
    """nats-server from PATH or Debian's /usr/sbin; fails clearly without it."""
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").is_file() else None)
    if found is None:
        raise SystemExit("error: the bus scenarios need nats-server "
                         "(Debian: apt-get install -y nats-server)")
    return found


class NatsServer(Gateway):
    """nats-server with JetStream on a free port; sampled like the gateway (its
    monitoring port answers the driver's HTTP requests)."""

    def __init__(self, tmp: Path, prefix: list[str]):
        self.client_port = free_port()
        self.port = free_port()   # monitoring: /healthz, /varz
        self.ws_path = ""
        self.log_path = tmp / f"nats-{self.client_port}.log"
        self._log = open(self.log_path, "wb")
        store = tmp / f"nats-store-{self.client_port}"
        self.proc = subprocess.Popen(
            [*prefix, nats_binary(), "-a", "127.0.0.1", "-p", str(self.client_port),
             "-m", str(self.port), "-js", "-sd", str(store)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_raise_nofile)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nats-server exited during start-up:\n" + self.log_tail())
            try:
                with self._get("/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("nats-server not ready in time:\n" + self.log_tail())

    def metrics(self) -> dict:
        try:
            with self._get("/varz", timeout=5) as r:
                varz = json.loads(r.read())
        except (OSError, ValueError):
            return {}
        return {"slow_consumers": float(varz.get("slow_consumers", 0)),
                "in_msgs": float(varz.get("in_msgs", 0)),
                "out_msgs": float(varz.get("out_msgs", 0))}


class BusPub:
    """`ticker-buspub` at a rate (see bench/loadgen/src/bin/buspub.rs)."""

    def __init__(self, binary: Path, url: str, universe: Path, rate: float, pub_id: str,
                 log: Path, prefix: list[str], count: int = 0):
        cmd = [*prefix, str(binary), "--url", url, "--universe", str(universe),
               "--rate", f"{rate:g}", "--id", pub_id]
        if count:
            cmd += ["--count", str(count)]
        self._log = open(log, "wb")
        self.log_path = log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def stop(self, timeout: float = 10.0) -> dict:
        """Stops it (SIGTERM) and returns its report, {} if it had none."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self._log.close()
        try:
            return json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {}


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, 0 once it is gone."""
    try:
        return sum(cpu_split(pid))
    except OSError:
        return 0.0


class Rig:
    """The processes around the measured edge, for one step."""

    def __init__(self, scenario: str, tmp: Path, gw_bin: Path, lg_bin: Path, universe: Path,
                 port: int, rate: float, workers: int, start_delay: float,
                 server_prefix: list[str], other_prefix: list[str]):
        self.scenario = scenario
        self.rate = rate
        self.tmp, self.universe, self.other_prefix = tmp, universe, other_prefix
        self.buspub_bin = lg_bin.with_name("ticker-buspub")
        self.publisher: Gateway | None = None
        self.buspub: BusPub | None = None
        self.pub_report: dict = {}
        self.nats = NatsServer(tmp, other_prefix)
        try:
            self._start(gw_bin, port, workers, start_delay, server_prefix)
        except BaseException:
            self.stop()
            raise

    def _start(self, gw_bin: Path, port: int, workers: int, start_delay: float,
               server_prefix: list[str]) -> None:
        tmp, universe, rate, other_prefix = self.tmp, self.universe, self.rate, self.other_prefix
        self.nats.wait_ready()
        nats = self.nats.url
        if self.scenario == "bus":
            pub_port = free_port()
            overlay = write_overlay(tmp, universe, pub_port, rate, 1000.0, workers, start_delay,
                                    extra=f'\n[publish]\nurl = "{nats}"\nid = "bench-pub"\n'
                                          f'stream = "{STREAM}"\ncreate_stream = true\n')
            self.publisher = Gateway(gw_bin, overlay, pub_port, tmp / f"publisher-{pub_port}.log",
                                     other_prefix)
            self.publisher.wait_ready()
            feed = (f'[[feeds]]\nname = "bus"\nkind = "nats"\nurl = "{nats}"\n'
                    f'stream = "{STREAM}"\n')
        else:
            feed = f'[[feeds]]\nname = "bus"\nkind = "nats"\nurl = "{nats}"\nfollow = "all"\n'
        overlay = write_overlay(tmp, universe, port, rate, 1000.0, workers, feeds=feed)
        self.edge = Gateway(gw_bin, overlay, port, tmp / f"edge-{port}.log", server_prefix)

    def prime(self) -> None:
        """Firehose: one quote of every symbol before clients connect (their
        snapshots), published by a run of its own (another `pub`)."""
        if self.scenario != "firehose":
            return
        primer = BusPub(self.buspub_bin, self.nats.url, self.universe, 0, "bench-prime",
                        self.tmp / "buspub-prime.log", self.other_prefix, count=500)
        primer.proc.wait(30)
        primer.stop()
        deadline = time.monotonic() + 30
        while self.edge.metrics().get("quotes", 0) < 500:
            if time.monotonic() > deadline:
                raise RuntimeError("the edge did not take the priming quotes:\n"
                                   + self.edge.log_tail())
            time.sleep(0.1)

    def go(self) -> None:
        """Firehose: the publisher starts (the bus scenario's sim feed starts by itself)."""
        if self.scenario == "firehose":
            self.buspub = BusPub(self.buspub_bin, self.nats.url, self.universe, self.rate,
                                 "bench-firehose", self.tmp / "buspub.log", self.other_prefix)

    def cpu(self) -> dict:
        """CPU seconds so far of every process but the edge."""
        out = {"nats-server": _cpu_s(self.nats.proc.pid)}
        if self.publisher is not None:
            out["publisher"] = _cpu_s(self.publisher.proc.pid)
        if self.buspub is not None:
            out["ticker-buspub"] = _cpu_s(self.buspub.pid)
        return out

    def summary(self, start: tuple[dict, Sample, dict], end: tuple[dict, Sample, dict]) -> dict:
        """The step's bus figures from (other CPU, edge sample, nats metrics) at
        the edges of the measured window."""
        (cpu0, edge0, nats0), (cpu1, edge1, nats1) = start, end
        window = edge1.t - edge0.t
        ingested = edge1.metrics.get("quotes", 0.0) - edge0.metrics.get("quotes", 0.0)
        edge_cpu = edge1.cpu_s - edge0.cpu_s
        return {
            "ingest_qps": ingested / window if window else None,
            "edge_cpu_s_per_m_ingested": edge_cpu / (ingested / 1e6) if ingested else None,
            "edge_cpu_pct": 100 * edge_cpu / window if window else None,
            "rejected_qps": (edge1.metrics.get("rejected_quotes", 0.0)
                             - edge0.metrics.get("rejected_quotes", 0.0)) / window if window else None,
            "cpu_pct": {name: 100 * (cpu1.get(name, 0.0) - cpu0.get(name, 0.0)) / window
                        for name in cpu1} if window else {},
            "nats_msgs_in_ps": (nats1.get("in_msgs", 0.0) - nats0.get("in_msgs", 0.0)) / window
            if window else None,
            "nats_slow_consumers": nats1.get("slow_consumers"),
        }

    def look(self, edge: Sample) -> tuple[dict, Sample, dict]:
        return self.cpu(), edge, self.nats.metrics()

    def stop(self) -> None:
        if self.buspub is not None:
            self.pub_report = self.buspub.stop()
        if self.publisher is not None:
            self.publisher.stop()
        self.nats.stop()
