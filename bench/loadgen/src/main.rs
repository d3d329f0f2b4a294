//! `ticker-loadgen`: opens thousands of WebSocket clients against ticker-gateway on
//! one tokio runtime (one lightweight task per client), subscribes each to a few
//! symbols and measures what arrives: delivered updates, frames, bytes, end-to-end
//! latency from the gateway's ingest stamp `ti`, connect times, errors and closes.
//!
//! Timeline: ramp-up at `--connect-rate`, then `--warmup`, then `--duration`
//! measured. Progress events are JSON lines on stderr (`ramped`, `measure_start`,
//! `measure_end`); the report is one JSON object on stdout (and `--json-out`).

mod args;
mod client;
mod frame;
mod polling;
mod stats;
mod sys;
mod tls;
mod universe;
mod webrtc;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::MaybeTlsStream;

use crate::args::{Args, Protocol};
use crate::client::{Client, Plan};
use crate::stats::{Phase, Stats};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let nofile = match sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise the open-file limit: {e}");
            0
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&args, nofile));
    // Client tasks still hold their sockets; drop them without waiting.
    runtime.shutdown_background();
    match result.and_then(|report| write_report(&args, &report)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_report(args: &Args, report: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    println!("{text}");
    if let Some(path) = &args.json_out {
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A progress event: one JSON line on stderr.
fn event(name: &str, stats: &Stats, extra: Value) {
    let mut e = json!({
        "event": name,
        "open": stats.open.load(Ordering::Relaxed),
        "subscribed": stats.subscribed.load(Ordering::Relaxed),
    });
    if let (Some(e), Value::Object(extra)) = (e.as_object_mut(), extra) {
        e.extend(extra);
    }
    eprintln!("{e}");
}

/// The gateway's address from a `ws://` or `wss://host:port/path` URL.
struct Target {
    addr: SocketAddr,
    /// The host of the URL, without IPv6 brackets (the TLS server name).
    host: String,
    /// `host:port`, for the Host header.
    authority: String,
    tls: bool,
}

/// Resolves the gateway's address from `--url`.
async fn resolve(url: &str) -> anyhow::Result<Target> {
    let uri: Uri = url.parse().with_context(|| format!("bad --url {url:?}"))?;
    let (tls, default_port) = match uri.scheme_str() {
        Some("ws") => (false, 80),
        Some("wss") => (true, 443),
        _ => bail!("--url must start with ws:// or wss://"),
    };
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(default_port);
    // An IPv6 literal keeps its brackets in the URL, not in the lookup or the name.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((bare, port))
        .await?
        .next()
        .with_context(|| format!("cannot resolve {host}"))?;
    Ok(Target {
        addr,
        host: bare.to_owned(),
        authority: format!("{host}:{port}"),
        tls,
    })
}

/// Builds every client's subscription from the universe.
fn build_clients(args: &Args, symbols: &[String]) -> anyhow::Result<Vec<Client>> {
    let picker = universe::Picker::new(
        args.universe_size,
        args.symbols_per_client,
        args.distribution,
    );
    let mut rng = SmallRng::seed_from_u64(args.seed);
    (0..args.clients)
        .map(|id| {
            let names: Vec<&str> = picker
                .pick(&mut rng)
                .into_iter()
                .map(|i| symbols[i].as_str())
                .collect();
            Ok(Client {
                id,
                source: args.source_ips[id % args.source_ips.len()],
                subscribe: client::subscribe_op(args.protocol, args.format, &names, args.max_rate)?,
                symbols: names.len() as u64,
            })
        })
        .collect()
}

/// Waits for one line on stdin (the driver's "go").
async fn wait_for_stdin() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| ())
    })
    .await?
    .context("cannot read stdin")
}

async fn run(args: &Args, nofile: u64) -> anyhow::Result<Value> {
    let started = Instant::now();
    let target = resolve(&args.url).await?;
    let tls = match (&args.ca, target.tls) {
        (Some(ca), true) => Some(tls::client_config(ca)?),
        (None, true) => bail!("a wss:// --url needs --ca (the CA to verify the server with)"),
        (Some(_), false) => bail!("--ca is for wss:// URLs only"),
        (None, false) => None,
    };
    let tcp = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("cannot connect to {}", target.addr))?;
    let symbols = match &tls {
        Some(config) => {
            let stream = tls::connect(config.clone(), &target.host, tcp).await?;
            universe::fetch_symbols(stream, &target.authority).await?
        }
        None => universe::fetch_symbols(tcp, &target.authority).await?,
    };
    if symbols.len() < args.universe_size {
        bail!(
            "--universe-size {} but the gateway has only {} symbols",
            args.universe_size,
            symbols.len()
        );
    }
    let clients = build_clients(args, &symbols)?;
    let stats = Arc::new(Stats::new());
    let plan = Arc::new(Plan {
        server: target.addr,
        url: args.url.clone(),
        format: args.format,
        protocol: args.protocol,
        ws_config: WebSocketConfig::default()
            .read_buffer_size(args.read_buffer)
            .write_buffer_size(0)
            .max_write_buffer_size(64 * 1024),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        churn: args.churn,
        quickack: args.quickack,
        tls,
        rtc: match args.protocol {
            Protocol::Webrtc => Some(webrtc::config()?),
            _ => None,
        },
        stats: stats.clone(),
    });

    // Ramp-up: spawn clients at --connect-rate; over when each has settled.
    let settled = Arc::new(AtomicUsize::new(0));
    let ramp_start = tokio::time::Instant::now();
    for (i, c) in clients.into_iter().enumerate() {
        sleep_until(ramp_start + Duration::from_secs_f64(i as f64 / args.connect_rate)).await;
        let settled = settled.clone();
        let settle = move || {
            settled.fetch_add(1, Ordering::Relaxed);
        };
        if plan.protocol == Protocol::SocketioPolling {
            tokio::spawn(polling::run(plan.clone(), c, settle));
        } else if plan.protocol == Protocol::Webrtc {
            tokio::spawn(webrtc::run(plan.clone(), c, settle));
        } else if plan.tls.is_some() {
            tokio::spawn(client::run::<MaybeTlsStream<TcpStream>>(
                plan.clone(),
                c,
                settle,
            ));
        } else {
            tokio::spawn(client::run::<TcpStream>(plan.clone(), c, settle));
        }
    }
    // Every client settles within connect_timeout + 10 s; allow a margin.
    let cap = tokio::time::Instant::now() + plan.connect_timeout + Duration::from_secs(12);
    while settled.load(Ordering::Relaxed) < args.clients && tokio::time::Instant::now() < cap {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    event("ramped", &stats, json!({ "ramp_s": ramp_s }));
    if args.sync_stdin {
        wait_for_stdin().await?;
    }

    stats.set_phase(Phase::Warmup);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;

    let open_at_start = stats.open.load(Ordering::Relaxed);
    let subscribed_at_start = stats.subscribed.load(Ordering::Relaxed);
    let cpu_start = sys::cpu_seconds();
    let measure_start = tokio::time::Instant::now();
    stats.set_phase(Phase::Measure);
    event("measure_start", &stats, json!({}));
    let per_second = timeline(&stats, measure_start, args.duration).await;
    stats.set_phase(Phase::Done);
    let secs = measure_start.elapsed().as_secs_f64();
    let cpu_measured = sys::cpu_seconds() - cpu_start;
    event("measure_end", &stats, json!({}));
    if args.sync_stdin {
        // The clients stay connected until the driver has taken its last look
        // at the server: 10,000 closes at once would be in that look.
        wait_for_stdin().await?;
    }

    let mut report = json!({
        "tool": "ticker-loadgen",
        "url": args.url,
        "tls": target.tls,
        "format": args.format.as_str(),
        "protocol": args.protocol.as_str(),
        "mode": if args.churn { "churn" } else { "steady" },
        "clients": args.clients,
        "symbols_per_client": args.symbols_per_client,
        "universe_size": args.universe_size,
        "distribution": format!("{:?}", args.distribution).to_lowercase(),
        "max_rate": args.max_rate,
        "workers": args.workers,
        "source_ips": args.source_ips,
        "seed": args.seed,
        "nofile_limit": nofile,
        "ramp_s": ramp_s,
        "warmup_s": args.warmup,
        "duration_s": secs,
        "open_at_measure_start": open_at_start,
        "subscribed_at_measure_start": subscribed_at_start,
        "open_at_end": stats.open.load(Ordering::Relaxed),
        "subscribed_at_end": stats.subscribed.load(Ordering::Relaxed),
        "updates_per_second_timeline": per_second,
        "loadgen_cpu_s": sys::cpu_seconds(),
        "loadgen_cpu_s_measured": cpu_measured,
        "loadgen_peak_rss_kib": sys::peak_rss_kib(),
        "wall_s": started.elapsed().as_secs_f64(),
    });
    if let (Some(r), Value::Object(measured)) = (report.as_object_mut(), stats.report(secs)) {
        r.extend(measured);
    }
    Ok(report)
}

/// Delivered updates in each second of the measured window.
async fn timeline(stats: &Stats, start: tokio::time::Instant, duration: f64) -> Vec<u64> {
    let end = start + Duration::from_secs_f64(duration);
    let mut out = Vec::new();
    let mut last = 0;
    let mut tick = start;
    while tick < end {
        tick = (tick + Duration::from_secs(1)).min(end);
        sleep_until(tick).await;
        let now = stats.updates_so_far();
        out.push(now - last);
        last = now;
    }
    out
}
