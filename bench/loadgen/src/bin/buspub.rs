//! `ticker-buspub`: a benchmark publisher for the NATS bus (PROTOCOL.md section
//! 11). It speaks NATS's text protocol on one plain TCP connection (`CONNECT`,
//! then `PUB ticker.quotes.<SYM> <len>`), so that what it measures is the edge and
//! the NATS server, not a client library: full quotes with a per-symbol `seq` and
//! one `pub`, round-robin over the symbols of a universe file, paced to `--rate`
//! quotes per second in 1 ms slices (`--rate 0`: as fast as the socket takes
//! them), `--count` quotes at most. It answers the server's `PING`s, stops on SIGTERM or after
//! `--duration`, and prints one JSON line: `{"published": N, "seconds": S}`.
//!
//! `ticker-buspub --url nats://127.0.0.1:4222 --universe feeds/universe.tsv --symbols 500 --rate 500000`

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;

/// Publishes full quotes to a NATS bus at a set rate.
#[derive(Debug, Parser)]
#[command(name = "ticker-buspub", version)]
struct Args {
    /// The NATS server (`nats://host:port`; no credentials).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// A universe file (TSV, a header row, the symbol in the first column).
    #[arg(long)]
    universe: String,
    /// Publish the first N symbols of the universe.
    #[arg(long, default_value_t = 500)]
    symbols: usize,
    /// Quotes per second (0: as fast as the connection takes them).
    #[arg(long, default_value_t = 100_000.0)]
    rate: f64,
    /// Stop after this many seconds (0: until SIGTERM).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Stop after this many quotes (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// The publisher id carried as `pub`.
    #[arg(long, default_value = "buspub")]
    id: String,
}

/// Set by SIGTERM or SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ticker-buspub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn symbols(path: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let syms: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .filter(|s| !s.is_empty())
        .take(n)
        .map(str::to_owned)
        .collect();
    if syms.is_empty() {
        bail!("{path} names no symbols");
    }
    Ok(syms)
}

fn run(args: Args) -> anyhow::Result<()> {
    let syms = symbols(&args.universe, args.symbols)?;
    let addr = args
        .url
        .strip_prefix("nats://")
        .with_context(|| format!("--url {:?} is not nats://host:port", args.url))?;
    let mut sock = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true)?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    // The server's INFO line comes first; everything after it is read by a
    // thread that answers PINGs and reports errors.
    let mut reader = BufReader::new(sock.try_clone()?);
    let mut info = String::new();
    reader.read_line(&mut info)?;
    if !info.starts_with("INFO ") {
        bail!("not a NATS server: {}", info.trim_end());
    }
    sock.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"ticker-buspub\"}\r\n",
    )?;
    let pongs = Arc::new(std::sync::Mutex::new(sock.try_clone()?));
    thread::spawn({
        let pongs = pongs.clone();
        move || answer_pings(reader, &pongs)
    });

    let mut seq = vec![0u64; syms.len()];
    let mut next = 0usize;
    let mut published = 0u64;
    let started = Instant::now();
    let mut buf = Vec::with_capacity(1 << 20);
    let slice = Duration::from_millis(1);
    while !STOP.load(Ordering::Relaxed) {
        let elapsed = started.elapsed();
        let left = if args.count > 0 {
            args.count - published
        } else {
            u64::MAX
        };
        if left == 0 || (args.duration > 0.0 && elapsed.as_secs_f64() >= args.duration) {
            break;
        }
        // Catch up to the rate (at most 1 s of quotes at a time), or one batch
        // of 1,000 when unpaced.
        let due = if args.rate > 0.0 {
            ((elapsed.as_secs_f64() * args.rate) as u64)
                .saturating_sub(published)
                .min(args.rate as u64)
        } else {
            1_000
        }
        .min(left);
        if due == 0 {
            thread::sleep(slice);
            continue;
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        buf.clear();
        for _ in 0..due {
            seq[next] += 1;
            quote(&mut buf, &syms[next], seq[next], t, &args.id);
            next = (next + 1) % syms.len();
        }
        // The reader thread writes PONGs on the same socket: one writer at a time.
        let mut w = pongs
            .lock()
            .map_err(|_| anyhow::anyhow!("the PING answerer panicked"))?;
        w.write_all(&buf).context("publishing")?;
        drop(w);
        published += due;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut w = pongs
        .lock()
        .map_err(|_| anyhow::anyhow!("the PING answerer panicked"))?;
    w.flush()?;
    println!("{{\"published\": {published}, \"seconds\": {seconds:.3}}}");
    Ok(())
}

/// Appends one `PUB` of a full quote whose prices move with its `seq`.
fn quote(buf: &mut Vec<u8>, sym: &str, seq: u64, t: u64, id: &str) {
    let cents = 10_000 + seq % 500;
    let body = format!(
        "{{\"sym\":\"{sym}\",\"seq\":{seq},\"t\":{t},\"bp\":\"{}.{:02}\",\"bs\":{},\"ap\":\"{}.{:02}\",\"as\":{},\"lp\":\"{}.{:02}\",\"ls\":100,\"v\":{},\"pub\":\"{id}\"}}",
        cents / 100,
        cents % 100,
        100 + seq % 7 * 100,
        (cents + 2) / 100,
        (cents + 2) % 100,
        200 + seq % 5 * 100,
        (cents + 1) / 100,
        (cents + 1) % 100,
        seq * 100,
    );
    // A Vec's io::Write never fails.
    let _ = write!(buf, "PUB ticker.quotes.{sym} {}\r\n{body}\r\n", body.len());
}

/// Answers the server's PINGs until the connection ends; prints its `-ERR`s.
fn answer_pings(reader: BufReader<TcpStream>, out: &std::sync::Mutex<TcpStream>) {
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.starts_with("PING") {
            let Ok(mut w) = out.lock() else { return };
            if w.write_all(b"PONG\r\n").is_err() {
                return;
            }
        } else if line.starts_with("-ERR") {
            eprintln!("ticker-buspub: server says {line}");
        }
    }
}
