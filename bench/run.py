#!/usr/bin/env python3
"""Benchmark driver for ticker-gateway (Python 3.11, standard library only).

Builds nothing: run `cargo build --release --workspace` first, which makes
target/release/ticker-gateway and target/release/ticker-loadgen.

For each step of a scenario it writes a config overlay (free port, 20,000
connections, 2 workers, rates that never throttle, [bench] ingest_stamp = true,
a 500-symbol universe and one evenly spread sim feed), starts the gateway, runs
the load generator split over several processes, samples the gateway's CPU and
RSS at the edges of the measured window, stops the gateway with SIGTERM and
writes bench/results/<scenario>[-quick]-<date>.{json,md}.

    python3 bench/run.py --scenario fanout-10k --quick
    python3 bench/run.py --scenario fanout-10k --steps 2000,4000
    python3 bench/run.py --scenario fanout-10k --quick --peers ws,socketio,bun
    python3 bench/run.py --scenario fanout-10k --quick --pin

--repeat N runs each step N times, the servers interleaved, and adds a table of
each server's median (Socket.IO's CPU per update varies by 2x between runs).

--peers (fanout-10k, idle-19k) also runs each step against peer servers from
bench/peers (Node `ws`, Socket.IO 4, Bun's native pub/sub; install with `npm ci
--prefix bench/peers`), one after the other, with the same feed, universe and
loadgen split.

--pin starts every server (gateway and peers) under `taskset -c 0` and every
loadgen process under `taskset -c 1` (DESIGN.md's "pinned" placement; without it
they share both cores: "shared"). The report and the JSON name the placement.

--tls serves wss: a throwaway CA and server certificate made with openssl in the
run's temp dir, the gateway started with `[tls]`, the loadgen on wss:// verifying
it with --ca. `--tls both` runs every step over ws, then over wss, alternating
within each repeat; the report shows both (server `gateway-wss`) and the wss ÷ ws
ratios.

    python3 bench/run.py --scenario fanout-10k --steps 2000 --repeat 2 --tls both

`--peers gateway-webrtc` runs the gateway again with WebRTC enabled and the
loadgen on WebRTC DataChannels. --loss 0,0.05 runs every server once per loss
share, interleaved (rows `gateway-loss5%`, `gateway-webrtc-loss5%`): the gateway
drops that share of its WebRTC datagrams itself, and an nftables rule drops it
from a TCP server's packets (benchkit/loss.py: the driver runs itself again in a
network namespace of its own, `unshare -rn`, and sets the rule there):

    python3 bench/run.py --scenario fanout-10k --clients 250 --steps 1000 --repeat 2 \\
        --peers gateway-webrtc --loss 0,0.05
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True   # keep bench/ free of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import report  # noqa: E402
from benchkit.gateway import Gateway, free_port, write_overlay, write_universe  # noqa: E402
from benchkit.loadgen import Fleet  # noqa: E402
from benchkit import bus  # noqa: E402
from benchkit import loss as losskit  # noqa: E402
from benchkit import peers as peerkit  # noqa: E402
from benchkit.tls import TestCa, make_ca  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
UNIVERSE = 500
SYMBOLS_PER_CLIENT = 20
# The sim feeds' tick: the gateway's (feeds/sim.rs) and the peers' (feed.mjs) every 5 ms.
FEED_TICKS_PER_S = 200
SERVER_MAX_RATE = 1000.0
NOISE_NOTE = ("one 2-core machine runs the gateway and the load generator (and "
              "whatever else is running on it); figures are indicative only.")

# Per scenario: (full settings, quick settings).
SCENARIOS: dict[str, tuple[dict, dict]] = {
    "fanout-10k": (
        dict(clients=10_000, procs=2, steps=[500, 1000, 2000, 4000, 8000, 16000], max_rate=1000.0,
             warmup=5, duration=15, connect_rate=2000),
        dict(clients=200, procs=2, steps=[1000, 4000], max_rate=1000.0,
             warmup=2, duration=8, connect_rate=1000),
    ),
    "idle-19k": (
        dict(clients=19_000, procs=4, steps=[1], max_rate=1000.0,
             warmup=3, duration=5, connect_rate=2000),
        dict(clients=1000, procs=2, steps=[1], max_rate=1000.0,
             warmup=2, duration=3, connect_rate=1000),
    ),
    "throttled": (
        dict(clients=10_000, procs=2, steps=[8000], max_rate=1.0,
             warmup=5, duration=15, connect_rate=2000),
        dict(clients=200, procs=2, steps=[8000], max_rate=1.0,
             warmup=2, duration=8, connect_rate=1000),
    ),
    # The bus scenarios (benchkit/bus.py): a publisher and nats-server in front of the edge.
    "bus": (
        dict(clients=10_000, procs=2, steps=[2000], max_rate=1000.0,
             warmup=5, duration=15, connect_rate=2000),
        dict(clients=200, procs=1, steps=[1000], max_rate=1000.0,
             warmup=2, duration=8, connect_rate=1000),
    ),
    "firehose": (
        dict(clients=1000, procs=1, steps=[100_000, 250_000, 500_000, 1_000_000],
             max_rate=1000.0, warmup=5, duration=15, connect_rate=1000),
        dict(clients=100, procs=1, steps=[100_000], max_rate=1000.0,
             warmup=2, duration=8, connect_rate=500),
    ),
    "churn": (
        dict(clients=500, procs=2, steps=[1000], max_rate=1000.0,
             warmup=3, duration=15, connect_rate=1000),
        dict(clients=50, procs=1, steps=[1000], max_rate=1000.0,
             warmup=2, duration=8, connect_rate=500),
    ),
}

DESCRIPTIONS = {
    "fanout-10k": "{clients} clients × 20 of 500 symbols (uniform), max_rate {max_rate:g}, "
                  "feed stepped over {steps} quotes/s spread evenly; one gateway start per step.",
    "idle-19k": "{clients} connections × 20 of 500 symbols, feed at 1 quote/s; "
                "ΔRSS from before the first client to after all are connected and subscribed.",
    "throttled": "{clients} clients × 20 of 500 symbols at max_rate {max_rate:g} on a "
                 "{steps} quotes/s feed: the gateway must conflate.",
    "bus": "sim feed at {steps} quotes/s in a publisher gateway → nats-server (JetStream "
           "last-value stream) → an edge gateway following demand, {clients} clients × 20 of "
           "500 symbols on the edge; the server figures are the edge's.",
    "firehose": "ticker-buspub publishing {steps} full quotes/s over 500 symbols → nats-server → "
                "an edge following every symbol, alone on CPU 0 (everything else on CPU 1), "
                "{clients} clients × 20 of 500 symbols on the edge; the server figures are the "
                "edge's.",
    "churn": "{clients} concurrent clients, each looping connect → subscribe 20 symbols → "
             "all snapshots → close, feed {steps} quotes/s.",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--quick", action="store_true", help="small smoke version (seconds, not minutes)")
    p.add_argument("--steps", help="feed rates in quotes/s, comma-separated (overrides the scenario)")
    p.add_argument("--clients", type=int, help="total clients (overrides the scenario)")
    p.add_argument("--procs", type=int, help="loadgen processes")
    p.add_argument("--warmup", type=float, help="seconds after ramp-up before measuring")
    p.add_argument("--duration", type=float, help="measured seconds per step")
    p.add_argument("--connect-rate", type=float, help="total new connections per second")
    p.add_argument("--max-rate", type=float,
                   help="each client's subscribe max_rate, updates/s per symbol (overrides "
                        "the scenario's; the server allows up to 1,000)")
    p.add_argument("--format", choices=["json", "msgpack"], default="json")
    p.add_argument("--distribution", choices=["uniform", "zipf"], default="uniform")
    p.add_argument("--loadgen-workers", type=int, default=1, help="tokio workers per loadgen process")
    p.add_argument("--gateway-workers", type=int, default=2, help="gateway server.workers")
    p.add_argument("--quickack", action="store_true",
                   help="diagnostic: loadgen clients never delay ACKs (TCP_QUICKACK)")
    p.add_argument("--peers", default="",
                   help="also run each step against these peer servers, comma-separated: "
                        "ws, socketio, bun (fanout-10k and idle-19k only; needs "
                        "`npm ci --prefix bench/peers`, and node for ws and socketio); "
                        "`stomp`, `gateway-socketio`, `gateway-socketio-polling` and "
                        "`gateway-webrtc` run the gateway again with STOMP, Socket.IO "
                        "(WebSocket or Engine.IO long-polling) and WebRTC clients")
    p.add_argument("--loss", default="0",
                   help="shares of the packets each server sends that are lost, comma-separated "
                        "(e.g. 0,0.05: every server runs once per share, interleaved); WebRTC "
                        "through webrtc.test_drop_fraction, TCP servers through an nftables rule "
                        "in a network namespace the driver makes (`unshare -rn`; needs nft)")
    p.add_argument("--pin", action="store_true",
                   help="pinned placement: servers (gateway, peers) under `taskset -c 0`, "
                        "loadgen processes under `taskset -c 1` (default: shared, unpinned)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each step N times (servers interleaved: gateway, peers, gateway, "
                        "...); the report adds the median of each server's runs")
    p.add_argument("--tls", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                   help="serve wss with a throwaway CA (`--tls` or `--tls on`), or `--tls both`: "
                        "each step over ws then over wss, interleaved within each repeat "
                        "(server `gateway-wss` in the report; not with --peers)")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    return p.parse_args()


def binaries() -> tuple[Path, Path]:
    gw = REPO / "target" / "release" / "ticker-gateway"
    lg = REPO / "target" / "release" / "ticker-loadgen"
    missing = [str(b) for b in (gw, lg) if not b.is_file()]
    if missing:
        sys.exit("error: missing " + ", ".join(missing)
                 + "\nbuild them first:  cargo build --release --workspace")
    return gw, lg


# --pin: CPU of the servers, CPU of the loadgen processes.
SERVER_CPU, LOADGEN_CPU = 0, 1


def placement_prefixes(pin: bool) -> tuple[list[str], list[str]]:
    """Command prefixes (server, loadgen) for the placement: none when shared,
    `taskset -c N` when pinned. Fails clearly when taskset or a CPU is missing."""
    if not pin:
        return [], []
    taskset = shutil.which("taskset")
    if taskset is None:
        sys.exit("error: --pin needs `taskset` (util-linux) on PATH\n"
                 "install it (Debian: apt-get install util-linux) or run without --pin")
    allowed = os.sched_getaffinity(0)
    missing = [c for c in (SERVER_CPU, LOADGEN_CPU) if c not in allowed]
    if missing:
        sys.exit(f"error: --pin uses CPUs {SERVER_CPU} and {LOADGEN_CPU}, but CPU(s) "
                 f"{', '.join(map(str, missing))} are not available to this process "
                 f"(allowed: {sorted(allowed)})")
    return [taskset, "-c", str(SERVER_CPU)], [taskset, "-c", str(LOADGEN_CPU)]


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]   # idle + iowait
    return sum(fields) - idle, sum(fields)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def feed_start_delay(cfg: dict, scenario: str) -> float:
    """Seconds the feed stays still after the server starts: clients connect and
    take their snapshots on a quiet feed (a server busy with fan-out would
    otherwise time out connects, and a peer would end up serving fewer clients),
    and the feed moves well before the measured window. Churn measures connects
    under load, so its feed moves from the start."""
    if scenario == "churn":
        return 0.0
    ramp = cfg["clients"] / cfg["connect_rate"]
    return ramp + min(3.0, cfg["warmup"] / 2)


# The gateway's row label when it serves wss (`--tls`).
WSS_LABEL = "gateway-wss"
# --tls -> whether each interleaved run of a step is over TLS.
TLS_RUNS = {"off": [False], "on": [True], "both": [False, True]}


def server_name(peer: str | None, wss: bool, loss: float) -> str:
    """The row label: the server, and the loss share when there is one."""
    name = peerkit.PEERS[peer][0] if peer else WSS_LABEL if wss else peerkit.GATEWAY_LABEL
    return f"{name}-loss{loss * 100:g}%" if loss else name


def run_step(cfg: dict, scenario: str, feed: float, tmp: Path, gw_bin: Path, lg_bin: Path,
             args: argparse.Namespace, peer: str | None = None,
             tls: TestCa | None = None, loss: float = 0.0) -> dict:
    """One server start (the gateway, or the peer `peer`): ramp-up, warmup,
    measured window, stop. With `tls` the gateway serves wss with that CA's
    certificate and the loadgen verifies it; `loss` is the share of what the
    server sends that is dropped."""
    pinned = args.pin or scenario == "firehose"   # the firehose measures one core
    server_prefix, loadgen_prefix = placement_prefixes(pinned)
    port = free_port()
    webrtc = peer == peerkit.WEBRTC
    tcp_loss = losskit.TcpLoss(port, loss) if loss and not webrtc else None
    universe = write_universe(REPO, tmp)
    delay = feed_start_delay(cfg, scenario)
    rig = None
    if scenario in bus.SCENARIOS:
        rig = bus.Rig(scenario, tmp, gw_bin, lg_bin, universe, port, feed, args.gateway_workers,
                      delay, server_prefix, loadgen_prefix)
        gateway, server, protocol = rig.edge, "edge", "ticker"
    elif peer is None or peer in peerkit.GATEWAY_PROTOCOLS:
        overlay = write_overlay(tmp, universe, port, feed, SERVER_MAX_RATE, args.gateway_workers,
                                delay, tls, loss if webrtc else None)
        _, _, protocol, ws_path = peerkit.PEERS[peer] if peer else (None, None, "ticker", "/ws")
        server = server_name(peer, tls is not None, loss)
        gateway = Gateway(gw_bin, overlay, port, tmp / f"gateway-{port}.log", server_prefix,
                          ws_path, tls)
    else:
        gateway = peerkit.Peer(REPO, peer, universe, port, feed, UNIVERSE, tmp / f"{peer}-{port}.log",
                               delay, server_prefix)
        server, protocol = server_name(peer, False, loss), gateway.protocol
    fleet = None
    if tcp_loss is not None:
        tcp_loss.start()
    try:
        gateway.wait_ready()
        if rig is not None:
            rig.prime()
        time.sleep(0.5)
        before = gateway.sample()
        extra = ["--symbols-per-client", str(SYMBOLS_PER_CLIENT), "--universe-size", str(UNIVERSE),
                 "--distribution", args.distribution, "--max-rate", f"{cfg['max_rate']:g}",
                 "--format", args.format, "--workers", str(args.loadgen_workers),
                 "--warmup", f"{cfg['warmup']:g}", "--duration", f"{cfg['duration']:g}",
                 "--protocol", protocol]
        if scenario == "churn":
            extra.append("--churn")
        if args.quickack:
            extra.append("--quickack")
        if gateway.ca is not None:
            extra += ["--ca", str(gateway.ca)]
        fleet = Fleet(lg_bin, tmp, cfg["procs"], cfg["clients"], gateway.ws_url, extra,
                      cfg["connect_rate"], prefix=loadgen_prefix)
        ramp_budget = cfg["clients"] / cfg["connect_rate"] + 40
        fleet.wait_all("ramped", ramp_budget)
        ramped = gateway.sample(with_metrics=False)
        fleet.go()
        if rig is not None:
            rig.go()
        fleet.wait_all("measure_start", cfg["warmup"] + 30)
        start = gateway.sample()
        rig_start = rig.look(start) if rig is not None else None
        busy0 = machine_busy()
        fleet.wait_all("measure_end", cfg["duration"] + 30)
        busy1 = machine_busy()
        end = gateway.sample()
        rig_end = rig.look(end) if rig is not None else None
        lg = fleet.finish()
    finally:
        if fleet is not None:
            fleet.kill()
        exit_code = gateway.stop()
        if rig is not None:
            rig.stop()
        if tcp_loss is not None:
            tcp_loss.stop()
    step = summarize(cfg, scenario, feed, before, ramped, start, end, lg, exit_code)
    if rig is not None:
        step["bus"] = rig.summary(rig_start, rig_end) | {"buspub": rig.pub_report}
    step["server"] = server
    if peer is not None:
        step["label"] += f" {server}"
        step["warnings"] = [w.replace("gateway exited", f"{server} exited") for w in step["warnings"]]
    step["machine_busy_pct"] = 100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    step["quickack"] = args.quickack
    step["placement"] = placement(pinned)
    step["tls"] = gateway.tls is not None
    step["loss"] = loss
    return step


def summarize(cfg, scenario, feed, before, ramped, start, end, lg, exit_code) -> dict:
    window = end.t - start.t
    cpu = end.cpu_s - start.cpu_s
    # Counters over the scrapes' own window (a scrape of a loaded server
    # answers late); none when either scrape failed.
    delta = {k: end.metrics[k] - start.metrics[k] for k in end.metrics if k in start.metrics}
    counted = end.metrics_t - start.metrics_t
    subscribed = lg["subscribed_at_measure_start"]
    subs_per_symbol = subscribed * SYMBOLS_PER_CLIENT / UNIVERSE
    delivered = lg["updates_per_sec"]
    offered = feed * subs_per_symbol
    feed_actual = delta["quotes"] / counted if "quotes" in delta and counted > 0 else None
    # Only the peers count their feed's ticks; the gateway's sim ticks on
    # tokio's interval, on a thread of its own.
    ticks = delta["ticks"] / counted if "ticks" in delta and counted > 0 else None
    warnings = []
    for edge, sample in (("start", start), ("end", end)):
        if sample.metrics_error is not None:
            warnings.append(f"/metrics at the window's {edge} failed ({sample.metrics_error}): "
                            "no feed rate or server counters for this step")
    if scenario != "churn" and subscribed < cfg["clients"]:
        warnings.append(f"only {subscribed} of {cfg['clients']} clients had all their snapshots "
                        "when measuring started")
    if scenario != "idle-19k" and lg["latency_ms"]["count"] == 0 and scenario != "churn":
        warnings.append("no update carried `ti`: is [bench] ingest_stamp on?")
    if feed_actual is not None and feed > 10 and feed_actual < 0.95 * feed:
        warnings.append(f"the feed brought only {feed_actual:,.0f} of {feed:,.0f} quotes/s")
    if ticks is not None and ticks < 0.9 * FEED_TICKS_PER_S:
        warnings.append(f"the feed ticked only {ticks:,.0f} times/s of {FEED_TICKS_PER_S} "
                        "(more quotes per tick than the gateway's)")
    if exit_code != 0:
        warnings.append(f"gateway exited with {exit_code} on SIGTERM")
    connections = lg["open_at_measure_start"]
    rss_delta = (start.rss_kib - before.rss_kib) * 1024
    step = {
        "label": f"{feed:g} q/s",
        "feed_qps": feed,
        "feed_qps_measured": feed_actual,
        "feed_ticks_per_s": ticks,
        "max_rate": cfg["max_rate"],
        "clients": cfg["clients"],
        "clients_subscribed": subscribed,
        "connections": connections,
        "subscribers_per_symbol": subs_per_symbol,
        "offered_ups": offered,
        "offered_ups_from_measured_feed": feed_actual * subs_per_symbol if feed_actual else None,
        "delivered_ups": delivered,
        "delivery_ratio": delivered / offered if offered else None,
        "conflation_ratio": offered / delivered if delivered else None,
        "server_updates_sent_ups": delta["updates_sent"] / counted if "updates_sent" in delta and counted > 0 else None,
        "server_conflated_ps": delta["conflated"] / counted if "conflated" in delta and counted > 0 else None,
        "window_s": window,
        "metrics_window_s": counted,
        "server_cpu_s": cpu,
        "server_cpu_pct": 100 * cpu / window if window else None,
        "server_cpu_s_per_m": cpu / (delivered * window / 1e6) if delivered else None,
        # The kernel's part of it (stime): sends, receives, wake-ups.
        "server_sys_s_per_m": (end.sys_s - start.sys_s) / (delivered * window / 1e6) if delivered else None,
        "server_thread_cpu_pct": {
            name: round(100 * (cpu_s - start.threads.get(name, 0.0)) / window, 1)
            for name, cpu_s in sorted(end.threads.items(),
                                      key=lambda kv: start.threads.get(kv[0], 0.0) - kv[1])
            if cpu_s - start.threads.get(name, 0.0) >= 0.01 * window
        } if window else {},
        "server_rss_mib": end.rss_kib / 1024,
        "rss_before_mib": before.rss_kib / 1024,
        "rss_ramped_mib": ramped.rss_kib / 1024,
        "rss_after_mib": start.rss_kib / 1024,
        "bytes_per_connection": rss_delta / connections if connections else None,
        "loadgen_cpu_pct": 100 * lg["loadgen_cpu_s_measured"] / lg["duration_s"],
        "latency_ms": lg["latency_ms"],
        "connect_ms": lg["connect_ms"],
        "all_snapshots_ms": lg["all_snapshots_ms"],
        "connects_per_sec": lg["connects_per_sec"],
        "cycles_per_sec": lg["cycles_per_sec"],
        "errors": lg["errors"],
        "error_count": sum(lg["errors"].values()),
        "closes": lg["closes"],
        "gateway_exit_code": exit_code,
        "warnings": warnings,
        "loadgen": lg,
    }
    return step


def placement(pin: bool) -> str:
    """DESIGN.md's name for the placement: "pinned" (--pin) or "shared"."""
    return "pinned" if pin else "shared"


def main() -> None:
    args = parse_args()
    gw_bin, lg_bin = binaries()
    server_prefix, loadgen_prefix = placement_prefixes(args.pin)   # fails early without taskset
    full, quick = SCENARIOS[args.scenario]
    cfg = dict(quick if args.quick else full)
    for key in ("clients", "procs", "warmup", "duration", "connect_rate", "max_rate"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.steps:
        cfg["steps"] = [float(x) for x in args.steps.split(",") if x.strip()]
    peer_names = [x.strip() for x in args.peers.split(",") if x.strip()]
    if args.repeat < 1:
        sys.exit("error: --repeat must be at least 1")
    try:
        losses = [float(x) for x in args.loss.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"error: --loss {args.loss!r} is not a list of shares like 0,0.05")
    if not losses or any(not 0 <= x < 1 for x in losses):
        sys.exit("error: --loss shares must lie in [0, 1)")
    if any(losses):   # the gateway's WebSocket run is always one of them
        losskit.enter_namespace()
        losskit.check()
    peer_versions = None
    if args.scenario in bus.SCENARIOS:
        bus.nats_binary()   # fails early without nats-server
        if args.tls != "off" or peer_names:
            sys.exit("error: the bus scenarios run the gateway alone over plain ws")
    if peer_names:
        if args.scenario not in ("fanout-10k", "idle-19k"):
            sys.exit("error: --peers works with --scenario fanout-10k or idle-19k "
                     "(the peers neither throttle nor are built for churn)")
        if args.format != "json":
            sys.exit("error: --peers needs --format json (the peers speak JSON only)")
        if args.tls != "off":
            sys.exit("error: --tls works with the gateway alone (the peers serve plain ws)")
        peer_versions = peerkit.check(REPO, peer_names)
    date = time.strftime("%Y-%m-%d-%H%M%S")
    result = {
        "scenario": args.scenario,
        "quick": args.quick,
        "date": date,
        "description": DESCRIPTIONS[args.scenario].format(
            clients=f"{cfg['clients']:,}", max_rate=cfg["max_rate"],
            steps=", ".join(f"{s:,g}" for s in cfg["steps"])),
        "noise_note": NOISE_NOTE,
        "placement": placement(args.pin),
        "placement_commands": {"server": shlex.join(server_prefix) or None,
                               "loadgen": shlex.join(loadgen_prefix) or None},
        "settings": cfg | {"repeat": args.repeat, "format": args.format,
                           "distribution": args.distribution,
                           "loadgen_workers": args.loadgen_workers,
                           "gateway_workers": args.gateway_workers,
                           "placement": placement(args.pin), "tls": args.tls,
                           "loss": losses,
                           "symbols_per_client": SYMBOLS_PER_CLIENT, "universe": UNIVERSE},
        "tls": args.tls,
        "servers": [server_name(None, t, x) for x in losses for t in TLS_RUNS[args.tls]]
                   + [server_name(n, False, x) for x in losses for n in peer_names],
        "peer_versions": peer_versions,
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                    "loadavg_start": loadavg()},
        "steps": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="ticker-bench-"))
    try:
        ca = make_ca(tmp) if args.tls != "off" else None
        servers = [(None, ca if t else None) for t in TLS_RUNS[args.tls]]
        servers += [(peer, None) for peer in peer_names]
        servers = [(peer, tls, x) for x in losses for peer, tls in servers]
        for feed in cfg["steps"]:
            for run in range(1, args.repeat + 1):
                for peer, tls, loss in servers:
                    name = server_name(peer, tls is not None, loss)
                    of = f", run {run} of {args.repeat}" if args.repeat > 1 else ""
                    print(f"[{args.scenario}] {name}: feed {feed:g} q/s, {cfg['clients']} "
                          f"clients{of} ...", file=sys.stderr)
                    step = run_step(cfg, args.scenario, feed, tmp, gw_bin, lg_bin, args, peer,
                                    tls, loss)
                    step["run"] = run
                    if args.repeat > 1:
                        step["label"] += f" (run {run})"
                    result["steps"].append(step)
                    print(f"  delivered {step['delivered_ups']:,.0f} upd/s, "
                          f"{step['connects_per_sec']:,.0f} connects/s, server CPU "
                          f"{step['server_cpu_pct']:.0f}%, p99 "
                          f"{step['latency_ms'].get('p99')} ms, errors {step['error_count']}",
                          file=sys.stderr)
    except (RuntimeError, OSError) as e:
        sys.exit(f"error: {e}\n(temp dir kept: {tmp})")
    result["machine"]["loadavg_end"] = loadavg()
    for step in result["steps"]:   # per-bucket histograms stay out of the saved file
        for h in ("latency_ms", "connect_ms", "all_snapshots_ms"):
            step["loadgen"].pop(h, None)
    json_path, md_path = report.write(result, args.out_dir)
    print(report.markdown(result))
    print(f"written: {json_path}, {md_path}", file=sys.stderr)
    if not args.keep_tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"temp dir kept: {tmp}", file=sys.stderr)


if __name__ == "__main__":
    main()
