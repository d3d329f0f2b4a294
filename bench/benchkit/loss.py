"""Packet loss for `--loss`. WebRTC: the gateway drops that share of the
datagrams it sends (`webrtc.test_drop_fraction`, seeded). WebSocket and the
other TCP servers: an nftables rule drops that share of the packets the server
sends from its port (`numgen random`), retransmitted by TCP as a real loss would be.

This machine's kernel has no netem (`tc qdisc add dev lo root netem loss 5%`
answers "Specified qdisc kind is unknown") nor iptables' statistic module
loaded, but nf_tables with numgen; `nft` (Debian package `nftables`) needs
CAP_NET_ADMIN, which an unprivileged user has in a network namespace of its own.
So the driver runs itself again under `unshare -rn` (loopback up, as fast) and
sets its rules there, never in the machine's own namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

TABLE = "ticker_bench_loss"
CHAIN = "out"
# Set by the driver for its own run in a namespace it made.
MARK = "TICKER_BENCH_OWN_NETNS"


def _nft(*args: str) -> None:
    r = subprocess.run(["nft", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {r.stderr.strip()}")


def enter_namespace() -> None:
    """Runs the driver again in a network namespace of its own (`unshare -rn`,
    its loopback up), unless this is that run: the rules never touch the
    machine's own firewall, even when the driver runs as root."""
    if os.environ.get(MARK) == "1":
        return
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        raise SystemExit("error: --loss above 0 runs the driver under `unshare -rn` and "
                         "`ip` (Debian: util-linux, iproute2); one is missing")
    os.environ[MARK] = "1"
    argv = [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]]
    os.execv(unshare, [unshare, "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv])


def check() -> None:
    """Fails clearly unless nft can filter here (in the namespace
    `enter_namespace` made); leaves an empty output chain."""
    if os.environ.get(MARK) != "1":
        raise SystemExit("error: nftables rules are set only in the driver's own namespace")
    if shutil.which("nft") is None:
        raise SystemExit("error: --loss above 0 needs `nft` for the TCP servers "
                         "(Debian: apt-get install nftables)")
    try:
        _nft("add", "table", "inet", TABLE)
        _nft("add", "chain", "inet", TABLE, CHAIN,
             "{ type filter hook output priority 0; policy accept; }")
        _nft("flush", "chain", "inet", TABLE, CHAIN)
    except RuntimeError as e:
        raise SystemExit(f"error: --loss cannot set up nftables ({e})") from None


class TcpLoss:
    """Drops `fraction` of the TCP packets sent from `port` while started."""

    def __init__(self, port: int, fraction: float):
        self.port = port
        self.per_10k = round(fraction * 10_000)

    def start(self) -> None:
        _nft("add", "rule", "inet", TABLE, CHAIN, "tcp", "sport", str(self.port),
             "numgen", "random", "mod", "10000", "<", str(self.per_10k), "drop")

    def stop(self) -> None:
        _nft("flush", "chain", "inet", TABLE, CHAIN)
