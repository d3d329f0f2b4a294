"""Peer servers run side by side with the gateway (bench/peers): a Node `ws`
server and a Socket.IO 4 server, each with one room per symbol and the same
simulated feed (rate, universe) as the gateway's step. Started with node, sampled
from /proc exactly like the gateway (the Gateway class does the sampling)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .gateway import Gateway, _raise_nofile

# --peers name -> (row label, script, loadgen --protocol, WebSocket path)
PEERS = {
    "ws": ("node-ws", "ws-server.mjs", "ticker", "/ws"),
    "socketio": ("socket.io", "socketio-server.mjs", "socketio",
                 "/socket.io/?EIO=4&transport=websocket"),
}
GATEWAY_LABEL = "gateway"


def check(repo: Path, names: list[str]) -> dict:
    """Fails clearly when node or the peers' node_modules are missing; returns
    the versions in use (node, ws, socket.io) for the result file."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise SystemExit(f"error: unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    node = shutil.which("node")
    if node is None:
        raise SystemExit("error: --peers needs `node` (Node.js 18 or later) on PATH")
    peers_dir = repo / "bench" / "peers"
    if not (peers_dir / "node_modules").is_dir():
        raise SystemExit("error: bench/peers/node_modules is missing\n"
                         "run: npm ci --prefix bench/peers")
    versions = {"node": subprocess.run([node, "--version"], capture_output=True, text=True,
                                       check=False).stdout.strip()}
    for pkg in ("ws", "socket.io"):
        try:
            versions[pkg] = json.loads(
                (peers_dir / "node_modules" / pkg / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            raise SystemExit(f"error: bench/peers/node_modules/{pkg} is missing\n"
                             "run: npm ci --prefix bench/peers") from None
    return versions


class Peer(Gateway):
    """One peer server process (node); same sampling and stop as the gateway."""

    def __init__(self, repo: Path, name: str, universe: Path, port: int,
                 quotes_per_sec: float, symbols: int, log: Path, start_delay: float = 0.0):
        self.label, script, self.protocol, self.ws_path = PEERS[name]
        self.port = port
        self.log_path = log
        self._log = open(log, "wb")
        cmd = [shutil.which("node") or "node", str(repo / "bench" / "peers" / script),
               "--port", str(port), "--qps", f"{quotes_per_sec:g}",
               "--universe", str(universe), "--symbols", str(symbols),
               "--start-delay", f"{start_delay:.3f}"]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_raise_nofile)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.ws_path}"
