//! `ticker-floor`: the floor under the gateway's per-update cost on this machine
//! (DESIGN.md, "Performance targets"). At light load every update is one small
//! WebSocket frame, i.e. one loopback `send`, which also wakes the reader; so this
//! measures, with nothing of the gateway in the way:
//!
//! - (a) 100-byte `send`s on one loopback TCP socket (TCP_NODELAY, as the gateway
//!   and the load generator set it) to a thread that reads them: CPU of the
//!   sending thread per send, user and kernel apart (`getrusage(RUSAGE_THREAD)`),
//!   wall time per send, and the reading thread's CPU per send;
//! - (a') the same, paced: each send waits until the reader has taken the last one
//!   and gone back to sleep, so every send also wakes it (wall time inside the
//!   `send` call only, as at light load);
//! - (b) 100-byte `send`s round-robin over N = 2,000 sockets, read by one tokio
//!   task per socket on a one-thread runtime (the load generator's shape): closer
//!   to a fan-out, with 2,000 sockets' state out of cache;
//! - (c) waking a parked thread: `std::thread::park`/`unpark` ping-pong between two
//!   threads, both on CPU 0 (a switch on one CPU) and on CPUs 0 and 1 (a wake of
//!   the other, idle CPU), and a `tokio::sync::Notify` ping-pong between two tasks
//!   on a 2-worker runtime; ns and CPU-ns (both sides) per wake.
//!
//! `--pin` runs (a), (a') and (b) with the sender on CPU 0 and the reader on CPU 1
//! (DESIGN.md's "pinned" placement); by default the scheduler places them.
//! Prints a Markdown table. `cargo run --release -p ticker-loadgen --bin ticker-floor`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

/// Measures loopback TCP sends and thread wake-ups: the floor under a pushed update.
#[derive(Debug, Parser)]
#[command(name = "ticker-floor", version)]
struct Args {
    /// Sends in (a) and (b).
    #[arg(long, default_value_t = 1_000_000)]
    sends: u64,

    /// Sends in (a'), each waking the reader (slower: it waits for the reader each time).
    #[arg(long, default_value_t = 100_000)]
    paced_sends: u64,

    /// Sockets written round-robin in (b).
    #[arg(long, default_value_t = 2000)]
    sockets: usize,

    /// Bytes per send (a small update frame).
    #[arg(long, default_value_t = 100)]
    size: usize,

    /// Ping-pong round trips in (c); each is two wake-ups.
    #[arg(long, default_value_t = 200_000)]
    round_trips: u64,

    /// Pinned placement for (a), (a') and (b): the sending thread on CPU 0, the
    /// reading thread on CPU 1 (DESIGN.md's "pinned"; default: unpinned, "shared").
    #[arg(long)]
    pin: bool,
}

/// (sender's CPU, reader's CPU) of a measurement; None: the scheduler's choice.
type Cpus = Option<(usize, usize)>;

/// Pins the calling thread to `cpu` (None: leaves it be).
fn pin_to(cpu: Option<usize>) -> io::Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t; CPU_SET ignores CPUs beyond its size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is valid for its stated size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::other(format!(
            "cannot pin a thread to CPU {cpu}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Runs `f` on a new thread pinned to `cpu` (None: not pinned) and returns its result.
fn on_cpu<T: Send>(
    cpu: Option<usize>,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    thread::scope(|s| {
        s.spawn(|| {
            pin_to(cpu)?;
            f()
        })
        .join()
        .expect("measuring thread panicked")
    })
}

/// " [CPU 0 → 1]" for a pinned measurement, "" otherwise.
fn placement(cpus: Cpus, arrow: &str) -> String {
    cpus.map_or_else(String::new, |(a, b)| format!(" [CPU {a} {arrow} {b}]"))
}

/// CPU time in nanoseconds, user and kernel.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    user: u64,
    sys: u64,
}

impl Cpu {
    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }

    fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            user: self.user + other.user,
            sys: self.sys + other.sys,
        }
    }

    fn total(self) -> u64 {
        self.user + self.sys
    }
}

fn rusage(who: libc::c_int) -> Cpu {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Cpu::default();
    }
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    Cpu {
        user: ns(ru.ru_utime),
        sys: ns(ru.ru_stime),
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Cpu {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU time of the whole process (all threads).
fn process_cpu() -> Cpu {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time of the calling thread in ns, precise (`CLOCK_THREAD_CPUTIME_ID`; a
/// system call, unlike `Instant::now`).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One row of the table: `ops` operations in `wall`, `cpu` of the measured side
/// (None: wall only), `peer` the CPU of the other side (reader) when separate.
struct Row {
    name: String,
    ops: u64,
    wall: Duration,
    cpu: Option<Cpu>,
    peer: Option<Cpu>,
    note: String,
}

fn per_op(ns: u64, ops: u64) -> String {
    format!("{:.0}", ns as f64 / ops.max(1) as f64)
}

fn print_table(rows: &[Row]) {
    println!(
        "| measurement | ops | wall ns/op | user ns/op | sys ns/op | CPU ns/op | peer CPU ns/op | note |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let dash = || "–".to_string();
        let (user, sys, total) = match r.cpu {
            Some(c) => (
                per_op(c.user, r.ops),
                per_op(c.sys, r.ops),
                per_op(c.total(), r.ops),
            ),
            None => (dash(), dash(), dash()),
        };
        let peer = r.peer.map_or_else(dash, |c| per_op(c.total(), r.ops));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            group(r.ops),
            per_op(r.wall.as_nanos() as u64, r.ops),
            user,
            sys,
            total,
            peer,
            r.note
        );
    }
}

/// 1000000 → "1,000,000".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; fails if that is below `need`.
fn ensure_nofile(need: u64) -> anyhow::Result<()> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit struct for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: `rl` is a valid rlimit struct; the kernel only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
    }
    if rl.rlim_cur < need {
        bail!(
            "the open-file limit is {} but {need} descriptors are needed (lower --sockets)",
            rl.rlim_cur
        );
    }
    Ok(())
}

/// `n` connected loopback pairs (writer, reader), TCP_NODELAY on both ends.
fn pairs(n: usize) -> io::Result<Vec<(TcpStream, TcpStream)>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let tx = TcpStream::connect(addr)?;
        let (rx, _) = listener.accept()?;
        tx.set_nodelay(true)?;
        rx.set_nodelay(true)?;
        out.push((tx, rx));
    }
    Ok(out)
}

/// What a reading thread did: its CPU, reads and bytes.
struct ReadSide {
    cpu: Cpu,
    reads: u64,
    bytes: u64,
}

/// Reads `rx` until EOF in the calling thread (64 KiB at a time), publishing the
/// byte count in `progress`.
fn read_to_end(mut rx: TcpStream, progress: &AtomicU64) -> io::Result<ReadSide> {
    let start = thread_cpu();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut reads, mut bytes) = (0u64, 0u64);
    loop {
        match rx.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reads += 1;
                bytes += n as u64;
                progress.store(bytes, Ordering::Release);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ReadSide {
        cpu: thread_cpu().since(start),
        reads,
        bytes,
    })
}

/// One loopback socket pair: the sending end, the reader's progress (bytes
/// read so far) and the reading thread (on the second CPU when pinned).
fn one_reader(
    cpus: Cpus,
) -> anyhow::Result<(
    TcpStream,
    Arc<AtomicU64>,
    thread::JoinHandle<io::Result<ReadSide>>,
)> {
    let (tx, rx) = pairs(1)?.pop().context("no socket pair")?;
    let progress = Arc::new(AtomicU64::new(0));
    let p = Arc::clone(&progress);
    let reader = thread::spawn(move || {
        pin_to(cpus.map(|c| c.1))?;
        read_to_end(rx, &p)
    });
    Ok((tx, progress, reader))
}

/// (a) back-to-back sends on one socket to a reading thread.
fn one_socket(args: &Args, cpus: Cpus) -> anyhow::Result<Row> {
    let (mut tx, _progress, reader) = one_reader(cpus)?;
    let msg = vec![b'x'; args.size];
    let (cpu, wall) = on_cpu(cpus.map(|c| c.0), || {
        let (t0, c0) = (Instant::now(), thread_cpu());
        for _ in 0..args.sends {
            tx.write_all(&msg)?;
        }
        Ok((thread_cpu().since(c0), t0.elapsed()))
    })?;
    drop(tx);
    let read = reader.join().expect("reader thread panicked")?;
    check_bytes(read.bytes, args.sends * args.size as u64)?;
    Ok(Row {
        name: format!(
            "(a) {}-byte send, 1 socket, reader thread{}",
            args.size,
            placement(cpus, "→")
        ),
        ops: args.sends,
        wall,
        cpu: Some(cpu),
        peer: Some(read.cpu),
        note: format!(
            "sending thread; the reader took {:.1} sends per read",
            args.sends as f64 / read.reads.max(1) as f64
        ),
    })
}

/// (a') sends that each wake a sleeping reader: wall time inside `send` only.
fn paced(args: &Args, cpus: Cpus) -> anyhow::Result<Row> {
    let (mut tx, progress, reader) = one_reader(cpus)?;
    let msg = vec![b'x'; args.size];
    let (in_send, cpu_in_send, calibration, total, sent) = on_cpu(cpus.map(|c| c.0), || {
        paced_sends(args, &mut tx, &msg, &progress)
    })?;
    drop(tx);
    let read = reader.join().expect("reader thread panicked")?;
    check_bytes(read.bytes, sent)?;
    Ok(Row {
        name: format!(
            "(a') {}-byte send waking a sleeping reader{}",
            args.size,
            placement(cpus, "→")
        ),
        ops: args.paced_sends,
        wall: in_send,
        cpu: None,
        peer: Some(read.cpu),
        note: format!(
            "wall inside send() only; thread CPU inside send() {} ns (clock read {} ns taken off); \
             loop {:.1} µs/send; {:.2} sends per read",
            per_op(
                cpu_in_send.saturating_sub(calibration * args.paced_sends),
                args.paced_sends
            ),
            calibration,
            total.as_secs_f64() * 1e6 / args.paced_sends.max(1) as f64,
            args.paced_sends as f64 / read.reads.max(1) as f64
        ),
    })
}

/// The sending side of (a'): (wall inside send, thread CPU inside send, cost of a
/// pair of CPU clock reads, the loop's wall time, bytes sent).
fn paced_sends(
    args: &Args,
    tx: &mut TcpStream,
    msg: &[u8],
    progress: &AtomicU64,
) -> anyhow::Result<(Duration, u64, u64, Duration, u64)> {
    let mut in_send = Duration::ZERO;
    let mut cpu_in_send = 0u64;
    let mut sent = 0u64;
    let t0 = Instant::now();
    for _ in 0..args.paced_sends {
        // Wait until the reader has taken everything, then a little longer so it is
        // asleep in read() again (it needs well under a microsecond to get there).
        while progress.load(Ordering::Acquire) < sent {
            std::hint::spin_loop();
        }
        let idle = Instant::now();
        while idle.elapsed() < Duration::from_micros(20) {
            std::hint::spin_loop();
        }
        let (s, c) = (Instant::now(), thread_cpu_ns());
        tx.write_all(msg)?;
        cpu_in_send += thread_cpu_ns() - c;
        in_send += s.elapsed();
        sent += args.size as u64;
    }
    let total = t0.elapsed();
    // What a pair of clock reads costs by itself, to take off the CPU figure.
    let calibration: u64 = (0..1000)
        .map(|_| {
            let c = thread_cpu_ns();
            thread_cpu_ns() - c
        })
        .sum::<u64>()
        / 1000;
    Ok((in_send, cpu_in_send, calibration, total, sent))
}

/// (b) sends round-robin over many sockets, read by one task per socket on a
/// one-thread tokio runtime in another thread.
fn many_sockets(args: &Args, cpus: Cpus) -> anyhow::Result<Row> {
    let n = args.sockets.max(1);
    ensure_nofile(2 * n as u64 + 64)?;
    let (mut txs, rxs): (Vec<TcpStream>, Vec<TcpStream>) = pairs(n)?.into_iter().unzip();
    let reader = thread::spawn(move || -> io::Result<ReadSide> {
        pin_to(cpus.map(|c| c.1))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let start = thread_cpu();
        let (reads, bytes) = rt.block_on(async move {
            use tokio::io::AsyncReadExt;
            let mut tasks = Vec::with_capacity(rxs.len());
            for rx in rxs {
                rx.set_nonblocking(true)?;
                let mut rx = tokio::net::TcpStream::from_std(rx)?;
                tasks.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 8 * 1024];
                    let (mut reads, mut bytes) = (0u64, 0u64);
                    loop {
                        match rx.read(&mut buf).await {
                            Ok(0) => return Ok((reads, bytes)),
                            Ok(k) => {
                                reads += 1;
                                bytes += k as u64;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                }));
            }
            let (mut reads, mut bytes) = (0u64, 0u64);
            for t in tasks {
                let (r, b) = t.await.map_err(io::Error::other)??;
                reads += r;
                bytes += b;
            }
            Ok::<_, io::Error>((reads, bytes))
        })?;
        Ok(ReadSide {
            cpu: thread_cpu().since(start),
            reads,
            bytes,
        })
    });
    // Let the reader register its sockets before the clock starts.
    thread::sleep(Duration::from_millis(200));
    let msg = vec![b'x'; args.size];
    let (cpu, wall) = on_cpu(cpus.map(|c| c.0), || {
        let (t0, c0) = (Instant::now(), thread_cpu());
        for i in 0..args.sends {
            txs[(i % n as u64) as usize].write_all(&msg)?;
        }
        Ok((thread_cpu().since(c0), t0.elapsed()))
    })?;
    drop(txs);
    let read = reader.join().expect("reader thread panicked")?;
    check_bytes(read.bytes, args.sends * args.size as u64)?;
    Ok(Row {
        name: format!(
            "(b) {}-byte send, round-robin over {} sockets{}",
            args.size,
            group(n as u64),
            placement(cpus, "→")
        ),
        ops: args.sends,
        wall,
        cpu: Some(cpu),
        peer: Some(read.cpu),
        note: format!(
            "sending thread; readers: 1 tokio task per socket, 1 thread, {:.2} sends per read",
            args.sends as f64 / read.reads.max(1) as f64
        ),
    })
}

fn check_bytes(got: u64, want: u64) -> anyhow::Result<()> {
    if got != want {
        bail!("the reader got {got} bytes, {want} were sent");
    }
    Ok(())
}

/// (c) std park/unpark ping-pong between two threads pinned to `cpus` (the same
/// CPU: each wake is a switch on that CPU; two CPUs: each wakes the other CPU,
/// idle by then); CPU of both threads.
fn park_pingpong(args: &Args, cpus: (usize, usize)) -> anyhow::Result<Row> {
    let rounds = args.round_trips;
    let turn = Arc::new(AtomicU64::new(0));
    let (mine, theirs, wall) = on_cpu(Some(cpus.0), || {
        let lead = thread::current();
        let t = Arc::clone(&turn);
        let (start_tx, start_rx) = std::sync::mpsc::channel::<()>();
        let partner = thread::spawn(move || -> io::Result<Cpu> {
            pin_to(Some(cpus.1))?;
            let _ = start_rx.recv();
            let c0 = thread_cpu();
            for i in 0..rounds {
                while t.load(Ordering::Acquire) != 2 * i + 1 {
                    thread::park();
                }
                t.store(2 * i + 2, Ordering::Release);
                lead.unpark();
            }
            Ok(thread_cpu().since(c0))
        });
        let other = partner.thread().clone();
        start_tx.send(()).context("partner thread gone")?;
        let (t0, c0) = (Instant::now(), thread_cpu());
        for i in 0..rounds {
            turn.store(2 * i + 1, Ordering::Release);
            other.unpark();
            while turn.load(Ordering::Acquire) != 2 * i + 2 {
                thread::park();
            }
        }
        let (mine, wall) = (thread_cpu().since(c0), t0.elapsed());
        let theirs = partner.join().expect("partner thread panicked")?;
        Ok((mine, theirs, wall))
    })?;
    let name = if cpus.0 == cpus.1 {
        format!(
            "(c) std park/unpark ping-pong, both threads on CPU {}",
            cpus.0
        )
    } else {
        format!(
            "(c) std park/unpark ping-pong{}",
            placement(Some(cpus), "↔")
        )
    };
    Ok(Row {
        name,
        ops: 2 * rounds,
        wall,
        cpu: Some(mine.plus(theirs)),
        peer: None,
        note: "per wake (2 per round trip); CPU of both threads".into(),
    })
}

/// (c) tokio Notify ping-pong between two tasks on a 2-worker runtime; CPU of the
/// whole process (both workers, idle spinning included).
fn notify_pingpong(args: &Args) -> anyhow::Result<Row> {
    use tokio::sync::Notify;
    let rounds = args.round_trips;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let (ping, pong) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (wall, cpu) = rt.block_on(async move {
        let (ping2, pong2) = (Arc::clone(&ping), Arc::clone(&pong));
        let partner = tokio::spawn(async move {
            for _ in 0..rounds {
                ping2.notified().await;
                pong2.notify_one();
            }
        });
        let lead = tokio::spawn(async move {
            let (t0, c0) = (Instant::now(), process_cpu());
            for _ in 0..rounds {
                ping.notify_one();
                pong.notified().await;
            }
            (t0.elapsed(), process_cpu().since(c0))
        });
        partner.await.map_err(anyhow::Error::from)?;
        lead.await.map_err(anyhow::Error::from)
    })?;
    drop(rt);
    Ok(Row {
        name: "(c) tokio Notify ping-pong, 2-worker runtime".into(),
        ops: 2 * rounds,
        wall,
        cpu: Some(cpu),
        peer: None,
        note: "per wake; CPU of the whole process (the two tasks may share a worker)".into(),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.size == 0 {
        bail!("--size must be at least 1");
    }
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let two = cpus >= 2;
    if args.pin && !two {
        bail!("--pin needs 2 CPUs (the sender on CPU 0, the reader on CPU 1)");
    }
    let sends = args.pin.then_some((0, 1));
    let load_start = loadavg();
    eprintln!("ticker-floor: (a) one socket ...");
    let mut rows = vec![one_socket(args, sends)?];
    eprintln!("ticker-floor: (a') paced ...");
    rows.push(paced(args, sends)?);
    eprintln!("ticker-floor: (b) {} sockets ...", args.sockets);
    rows.push(many_sockets(args, sends)?);
    eprintln!("ticker-floor: (c) wake-ups ...");
    rows.push(park_pingpong(args, (0, 0))?);
    if two {
        rows.push(park_pingpong(args, (0, 1))?);
    }
    rows.push(notify_pingpong(args)?);
    println!(
        "ticker-floor: {cpus} CPUs, kernel {}, load average {load_start} at start, {} at end; \
         sends {}\n",
        kernel(),
        loadavg(),
        if args.pin {
            "pinned (sender on CPU 0, reader on CPU 1)"
        } else {
            "unpinned (shared)"
        }
    );
    print_table(&rows);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
