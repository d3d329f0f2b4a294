//! The `ticker-gateway` binary: parse flags, load settings, run until SIGINT/SIGTERM
//! (or, with `--check-config`, print the effective settings and exit). SIGHUP
//! loads the settings again and applies the keys and the certificate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ticker_gateway::app::Application;
use ticker_gateway::auth::check_pattern;
use ticker_gateway::reload::Reloader;
use ticker_gateway::settings::{LogFormat, LogSettings, Settings};

/// jemalloc keeps its bookkeeping out of the blocks it hands out, so the untouched
/// tail of a connection's buffers stays unbacked: 3 KiB less RSS per idle connection
/// than the system allocator (`bench/run.py --scenario idle-19k`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A live stock-ticker push gateway.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A settings file layered over the built-in defaults (only the keys it changes).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Load and check the settings (every layer, the environment included), print
    /// the effective settings with secrets redacted, and exit: 0 when they are
    /// valid, 2 when not.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print a fresh random API key and the settings lines that accept it (only
    /// its SHA-256 goes in the settings; give the key to the client).
    Keygen {
        /// The principal's name.
        #[arg(long)]
        sub: String,
        /// Entitlement patterns, comma-separated: AAPL, AA* or *.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        syms: Vec<String>,
    },
}

/// Logs as `log` says; `RUST_LOG`, when set, wins over `log.level`.
fn init_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    match log.format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Registers the SIGINT/SIGTERM handlers now (so a signal that comes during start-up
/// is not lost) and returns a future that resolves on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// On each SIGHUP: the settings are loaded again from the same layers and
/// their keys and certificate applied; settings that no longer load leave
/// everything as it was.
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    reloader: Reloader,
    config: Option<PathBuf>,
) {
    while hangups.recv().await.is_some() {
        let reloaded = Settings::load(config.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|s| reloader.reload(&s));
        match reloaded {
            Ok(()) => tracing::info!("SIGHUP: keys, token keys and certificate reloaded"),
            Err(e) => tracing::error!("SIGHUP: reload failed, nothing changed: {e}"),
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Keygen { sub, syms }) = &args.command {
        if let Some(e) = syms.iter().find_map(|p| check_pattern(p).err()) {
            eprintln!("error: --syms {e}");
            return ExitCode::from(2);
        }
        let (key, lines) = ticker_gateway::auth::keygen(sub, syms);
        println!("# API key for {sub:?} (give it to the client; it is not stored anywhere):");
        println!("# {key}");
        println!("# Settings lines (add under your --config file):");
        print!("{lines}");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        print!("{}", settings.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(&settings.log);
    ticker_gateway::open_files::raise_to_hard_limit();
    let result = actix_web::rt::System::new().block_on(async move {
        let signals = shutdown_signal()?;
        // Registered before start-up: SIGHUP's default action ends the process.
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let app = Application::build(settings)?;
        #[cfg(unix)]
        actix_web::rt::spawn(reload_on_hangup(hangups, app.reloader(), args.config));
        app.run_until(signals).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
