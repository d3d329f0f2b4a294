"""Markdown tables and result files for bench/run.py."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _f(v, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _with_peers(steps: list[dict]) -> bool:
    return any(s.get("server", "gateway") not in ("gateway", "edge") for s in steps)


def _ratio(steps: list[dict], s: dict, key) -> str:
    """s's figure ÷ the gateway's at the same feed rate and run (`key` picks the figure)."""
    gw = next((g for g in steps if g.get("server", "gateway") == "gateway"
               and g["feed_qps"] == s["feed_qps"] and g.get("run", 1) == s.get("run", 1)), None)
    if gw is None:
        return "–"
    a, b = key(s), key(gw)
    return _f(a / b, 2) if a is not None and b else "–"


def _p99(s: dict):
    return s["latency_ms"]["p99"]


def _repeated(steps: list[dict]) -> bool:
    return any(s.get("run", 1) > 1 for s in steps)


def fanout_table(steps: list[dict]) -> str:
    peers = _with_peers(steps)
    runs = _repeated(steps)
    rows = []
    for s in steps:
        lead = ([s.get("server", "gateway")] if peers else []) + ([str(s.get("run", 1))] if runs else [])
        ratios = [
            _ratio(steps, s, lambda x: x["server_cpu_s_per_m"]),
            _ratio(steps, s, _p99),
            _ratio(steps, s, lambda x: x["server_rss_mib"]),
        ] if peers else []
        rows.append(lead + [
            _f(s["feed_qps"]), _f(s["clients_subscribed"]), _f(s["offered_ups"]),
            _f(s["delivered_ups"]), _f(s["delivery_ratio"], 3), _f(s["server_cpu_pct"]),
            _f(s["server_cpu_s_per_m"], 2), _f(s.get("server_sys_s_per_m"), 2),
            _f(s["latency_ms"]["p50"], 2),
            _f(s["latency_ms"]["p99"], 2), _f(s["latency_ms"]["p999"], 2),
            _f(s["server_rss_mib"], 1), _f(s["loadgen_cpu_pct"]),
        ] + ratios)
    return _table((["server"] if peers else []) + (["run"] if runs else []) + [
        "feed q/s", "clients", "offered upd/s", "delivered upd/s", "ratio",
        "server CPU %", "server CPU-s / M upd", "of which kernel", "p50 ms", "p99 ms", "p99.9 ms",
        "server RSS MiB", "loadgen CPU %"] + ([
            "CPU-s / M ÷ gateway", "p99 ÷ gateway", "RSS ÷ gateway"] if peers else []), rows)


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _spread(values: list, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{_f(min(values), digits)}–{_f(max(values), digits)}"


def median_table(steps: list[dict], figures: list[tuple[str, object, int]]) -> str:
    """One row per server and feed rate: the median of its runs for each figure
    (`figures`: header, key function, digits), then the range of the first figure
    and its median divided by the gateway's."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for s in steps:
        groups.setdefault((s.get("server", "gateway"), s["feed_qps"]), []).append(s)
    medians = {k: [_median([key(s) for s in g]) for _, key, _ in figures]
               for k, g in groups.items()}
    rows = []
    for (server, feed), group in groups.items():
        mine, gw = medians[(server, feed)][0], medians.get(("gateway", feed), [None])[0]
        ratio = _f(mine / gw, 2) if mine is not None and gw else "–"
        rows.append([server, _f(feed), str(len(group))]
                    + [_f(m, d) for m, (_, _, d) in zip(medians[(server, feed)], figures)]
                    + [_spread([figures[0][1](s) for s in group], figures[0][2]), ratio])
    first = figures[0][0]
    return _table(["server", "feed q/s", "runs"] + [f"{h} (median)" for h, _, _ in figures]
                  + [f"{first} (min–max)", f"{first} ÷ gateway (medians)"], rows)


def fanout_medians(steps: list[dict]) -> str:
    return median_table(steps, [
        ("server CPU-s / M upd", lambda s: s["server_cpu_s_per_m"], 2),
        ("of which kernel", lambda s: s.get("server_sys_s_per_m"), 2),
        ("delivered upd/s", lambda s: s["delivered_ups"], 0),
        ("p50 ms", lambda s: s["latency_ms"]["p50"], 2),
        ("p99 ms", _p99, 2),
        ("server RSS MiB", lambda s: s["server_rss_mib"], 1),
    ])


def idle_medians(steps: list[dict]) -> str:
    return median_table(steps, [
        ("KiB / conn", lambda s: s["bytes_per_connection"] / 1024
         if s["bytes_per_connection"] else None, 1),
    ])


def knee_note(steps: list[dict]) -> str:
    if not _with_peers(steps):
        return _knee_note(steps)
    servers = list(dict.fromkeys(s.get("server", "gateway") for s in steps))
    return "\n".join(f"- {name}: " + _knee_note([s for s in steps if s.get("server") == name])
                     for name in servers)


def _knee_note(steps: list[dict]) -> str:
    if not steps:
        return ""
    peak = max(steps, key=lambda s: s["delivered_ups"])
    note = (f"Peak delivered: {_f(peak['delivered_ups'])} updates/s at {_f(peak['feed_qps'])} "
            f"quotes/s (ratio {_f(peak['delivery_ratio'], 3)}).")
    below = [s for s in steps if s["delivery_ratio"] is not None and s["delivery_ratio"] < 0.95]
    if below:
        first = below[0]
        note += (f" Delivery falls below 95% of offered at {_f(first['feed_qps'])} quotes/s: "
                 "the knee lies at or below that step.")
    else:
        note += " Delivery kept up with the offered load at every step (no knee reached)."
    return note


def idle_table(steps: list[dict]) -> str:
    peers = _with_peers(steps)
    runs = _repeated(steps)
    rows = [([s.get("server", "gateway")] if peers else []) + ([str(s.get("run", 1))] if runs else []) + [
        _f(s["connections"]), _f(s["clients_subscribed"]), _f(s["rss_before_mib"], 1),
        _f(s["rss_after_mib"], 1), _f(s["bytes_per_connection"]),
        _f(s["bytes_per_connection"] / 1024 if s["bytes_per_connection"] else None, 1),
        _f(s["server_cpu_pct"], 1), _f(s["connect_ms"]["p99"], 1), _f(s["error_count"]),
    ] + ([_ratio(steps, s, lambda x: x["bytes_per_connection"])] if peers else [])
        for s in steps]
    return _table((["server"] if peers else []) + (["run"] if runs else []) + [
                   "connections", "subscribed", "RSS before MiB", "RSS after MiB",
                   "ΔRSS / conn (bytes)", "KiB / conn", "server CPU % (idle)",
                   "connect p99 ms", "errors"]
                  + (["ΔRSS / conn ÷ gateway"] if peers else []), rows)


def throttled_table(steps: list[dict]) -> str:
    rows = [[
        _f(s["clients_subscribed"]), _f(s["feed_qps"]), _f(s["max_rate"], 1),
        _f(s["offered_ups"]), _f(s["delivered_ups"]), _f(s["conflation_ratio"], 1),
        _f(s["server_cpu_pct"]), _f(s["server_cpu_s_per_m"], 2),
        _f(s["latency_ms"]["p99"], 2), _f(s["loadgen_cpu_pct"]),
    ] for s in steps]
    return _table(["clients", "feed q/s", "max_rate", "offered upd/s", "delivered upd/s",
                   "conflation (offered/delivered)", "server CPU %",
                   "server CPU-s / M delivered", "p99 ms", "loadgen CPU %"], rows)


def churn_table(steps: list[dict]) -> str:
    rows = [[
        _f(s["clients"]), _f(s["connects_per_sec"]), _f(s["cycles_per_sec"]),
        _f(s["error_count"]), _f(s["connect_ms"]["p50"], 2), _f(s["connect_ms"]["p99"], 2),
        _f(s["all_snapshots_ms"]["p99"], 2), _f(s["server_cpu_pct"]), _f(s["loadgen_cpu_pct"]),
    ] for s in steps]
    return _table(["concurrent clients", "connects/s", "full cycles/s", "errors",
                   "connect p50 ms", "connect p99 ms", "all snapshots p99 ms",
                   "server CPU %", "loadgen CPU %"], rows)


def bus_table(steps: list[dict]) -> str:
    """The bus scenarios: the fan-out figures of the edge, then what crossed the bus
    and what every process spent."""
    rows = []
    for s in steps:
        b = s["bus"]
        cpu = b["cpu_pct"]
        rows.append([
            s["label"], _f(b["nats_msgs_in_ps"]), _f(b["ingest_qps"]), _f(b["rejected_qps"]),
            _f(b["edge_cpu_pct"]), _f(b["edge_cpu_s_per_m_ingested"], 2),
            _f(s["delivered_ups"]), _f(s["server_cpu_s_per_m"], 2),
            _f(s["latency_ms"]["p50"], 2), _f(s["latency_ms"]["p99"], 2),
            " ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items())),
            _f(b["nats_slow_consumers"]),
        ])
    return fanout_table(steps) + "\n\n" + _table([
        "step", "bus msgs in /s", "edge ingest q/s", "edge rejected q/s", "edge CPU %",
        "edge CPU-s / M ingested", "delivered upd/s", "edge CPU-s / M delivered",
        "p50 ms", "p99 ms", "other CPU %", "nats slow consumers"], rows)


TABLES = {
    "bus": bus_table,
    "firehose": bus_table,
    "fanout-10k": fanout_table,
    "idle-19k": idle_table,
    "throttled": throttled_table,
    "churn": churn_table,
}


MEDIANS = {
    "fanout-10k": fanout_medians,
    "idle-19k": idle_medians,
}


PLACEMENTS = {
    "shared": "**shared** (servers and loadgen unpinned, sharing every core).",
    "pinned": "**pinned** (`taskset`: every server on CPU 0, every loadgen process on CPU 1).",
}


def markdown(result: dict) -> str:
    m = result["machine"]
    kind = "quick (smoke)" if result["quick"] else "full"
    lines = [
        f"## {result['scenario']} — {kind}, {result['date']}",
        "",
        f"Machine: {m['cpus']} CPUs, load average {m['loadavg_start']} at start, "
        f"{m['loadavg_end']} at end. **Noisy**: {result['noise_note']}",
        "",
        "Placement: " + PLACEMENTS.get(result.get("placement", "shared"), result.get("placement")),
        "",
        f"Workload: {result['description']}",
        "",
    ]
    if result.get("peer_versions"):
        v = result["peer_versions"]
        runs = result["settings"].get("repeat", 1)
        times = f", {runs} times over" if runs > 1 else ""
        versions = ", ".join(f"{k} {v[k]}" for k in ("node", "ws", "socket.io", "bun") if k in v)
        lines += [f"Servers, one after the other per step{times}: {', '.join(result['servers'])} "
                  f"({versions}; a room or topic per symbol, same simulated feed rate and "
                  "universe). "
                  "Ratio columns: the row's figure ÷ the gateway's at the same feed rate.", ""]
    tls = result.get("tls", "off")
    if tls != "off":
        runs = result["settings"].get("repeat", 1)
        times = f", {runs} times over" if runs > 1 else ""
        lines += [("Transport: the gateway over ws (`gateway`) and over wss (`gateway-wss`), "
                   f"one after the other per step{times}; ratio columns: the wss row's figure "
                   "÷ the ws row's at the same feed rate and run." if tls == "both" else
                   "Transport: wss (`gateway-wss`)."), ""]
    lines += [
        TABLES[result["scenario"]](result["steps"]),
        "",
    ]
    medians = MEDIANS.get(result["scenario"])
    if medians and _repeated(result["steps"]):
        lines += ["Median of the runs per server (the ratio divides medians):", "",
                  medians(result["steps"]), ""]
    if result["scenario"] == "fanout-10k":
        lines += [knee_note(result["steps"]), ""]
    for s in result["steps"]:
        problems = []
        if s.get("errors"):
            problems.append("errors " + json.dumps(s["errors"]))
        if s.get("closes"):
            problems.append("closes " + json.dumps(s["closes"]))
        if s.get("warnings"):
            problems += s["warnings"]
        if problems:
            lines.append(f"- step {s['label']}: " + "; ".join(problems))
    return "\n".join(lines).rstrip() + "\n"


def write(result: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if result["quick"] else ""
    stem = f"{result['scenario']}{suffix}-{result['date']}"
    json_path = out_dir / f"{stem}.json"
    md_path = out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path
