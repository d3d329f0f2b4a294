"""Peer servers run side by side with the gateway (bench/peers): a Node `ws`
server and a Socket.IO 4 server, each with one room per symbol, and Bun's native
WebSocket server with one pub/sub topic per symbol; all share the same simulated
feed (rate, universe) as the gateway's step. Started with node or with the Bun
binary from npm, sampled from /proc exactly like the gateway (the Gateway class
does the sampling)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .gateway import Gateway, _raise_nofile

# --peers name -> (row label, script, loadgen --protocol, WebSocket path);
# `stomp`, `gateway-socketio`, `gateway-socketio-polling` and `gateway-webrtc`
# are the gateway itself, measured again with STOMP, Socket.IO (WebSocket, or
# Engine.IO long-polling that never upgrades) and WebRTC clients (WebRTC signals
# on the gateway's port: the path only carries host and port to the loadgen).
GATEWAY_PROTOCOLS = ("stomp", "gateway-socketio", "gateway-socketio-polling", "gateway-webrtc")
WEBRTC = "gateway-webrtc"
PEERS = {
    "stomp": ("gateway-stomp", None, "stomp", "/ws"),
    "gateway-socketio": ("gateway-socketio", None, "socketio",
                         "/socket.io/?EIO=4&transport=websocket"),
    "gateway-socketio-polling": ("gateway-socketio-polling", None, "socketio-polling",
                                 "/socket.io/?EIO=4&transport=polling"),
    WEBRTC: (WEBRTC, None, "webrtc", "/ws"),
    "ws": ("node-ws", "ws-server.mjs", "ticker", "/ws"),
    "socketio": ("socket.io", "socketio-server.mjs", "socketio",
                 "/socket.io/?EIO=4&transport=websocket"),
    "bun": ("bun", "bun-server.mjs", "ticker", "/ws"),
}
# --peers name -> npm package it needs from bench/peers/node_modules
PACKAGES = {"ws": "ws", "socketio": "socket.io", "bun": "@oven/bun-linux-x64-baseline"}
GATEWAY_LABEL = "gateway"
BUN = Path("bench", "peers", "node_modules", "@oven", "bun-linux-x64-baseline", "bin", "bun")
NPM_CI = "run: npm ci --prefix bench/peers"


def runtime(repo: Path, name: str) -> str:
    """The interpreter a peer runs under: the Bun binary from npm for `bun`, node otherwise."""
    if name == "bun":
        return str(repo / BUN)
    return shutil.which("node") or "node"


def check(repo: Path, names: list[str]) -> dict:
    """Fails clearly when node, the Bun binary or the peers' node_modules are
    missing; returns the versions in use (node, ws, socket.io, bun: those of the
    peers asked for) for the result file."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise SystemExit(f"error: unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    names = [n for n in names if n not in GATEWAY_PROTOCOLS]
    if not names:
        return {}
    peers_dir = repo / "bench" / "peers"
    if not (peers_dir / "node_modules").is_dir():
        raise SystemExit(f"error: bench/peers/node_modules is missing\n{NPM_CI}")
    versions: dict = {}
    if any(n != "bun" for n in names):
        node = shutil.which("node")
        if node is None:
            raise SystemExit(f"error: --peers {','.join(n for n in names if n != 'bun')} needs "
                             "`node` (Node.js 18 or later) on PATH")
        versions["node"] = subprocess.run([node, "--version"], capture_output=True, text=True,
                                          check=False).stdout.strip()
    for name in names:
        pkg = PACKAGES[name]
        try:
            version = json.loads(
                (peers_dir / "node_modules" / pkg / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            raise SystemExit(f"error: bench/peers/node_modules/{pkg} is missing\n{NPM_CI}") from None
        if name != "bun":   # Bun's own version is asked of the binary below
            versions[pkg] = version
    if "bun" in names:
        bun = repo / BUN
        try:
            out = subprocess.run([str(bun), "--version"], capture_output=True, text=True,
                                 check=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            raise SystemExit(f"error: --peers bun cannot run {bun} ({e})\n{NPM_CI}  "
                             "(the package ships a Linux x64 glibc binary)") from None
        versions["bun"] = out
    return versions


class Peer(Gateway):
    """One peer server process (node or bun); same sampling and stop as the gateway.
    `prefix` goes before the command (the driver's `taskset -c 0` under --pin)."""

    def __init__(self, repo: Path, name: str, universe: Path, port: int,
                 quotes_per_sec: float, symbols: int, log: Path, start_delay: float = 0.0,
                 prefix: list[str] | None = None):
        self.label, script, self.protocol, self.ws_path = PEERS[name]
        self.port = port
        self.log_path = log
        self._log = open(log, "wb")
        cmd = [*(prefix or []), runtime(repo, name), str(repo / "bench" / "peers" / script),
               "--port", str(port), "--qps", f"{quotes_per_sec:g}",
               "--universe", str(universe), "--symbols", str(symbols),
               "--start-delay", f"{start_delay:.3f}"]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_raise_nofile)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.ws_path}"
