//! Supervision: an adapter runs until shutdown; a reconnectable error is retried
//! after a capped, jittered [`backoff`], a fatal one ends it. A connection that
//! stayed up for [`HEALTHY`] starts the backoff over, so a feed that drops once a
//! day reconnects after half a second, not after the cap it reached a week ago.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{FeedContext, FeedError, FeedSettings, FeedState};
use crate::backoff::{backoff, BACKOFF_CAP};

/// A run that lasted this long was a healthy connection: the next drop is
/// retried as if it were the first. As long as the longest backoff, so a source
/// that accepts and drops again soon after keeps climbing towards the cap.
const HEALTHY: Duration = BACKOFF_CAP;

/// Runs an adapter until shutdown: a reconnectable error is retried after
/// [`backoff`], a fatal one ends it.
pub async fn supervise(settings: FeedSettings, ctx: FeedContext) {
    let adapter = &settings.adapter;
    supervise_runs(settings.name(), ctx, |ctx| adapter.run(ctx)).await;
}

/// The supervision loop over `run`, which runs the adapter once.
async fn supervise_runs<F, R>(name: &str, mut ctx: FeedContext, mut run: F)
where
    F: FnMut(FeedContext) -> R,
    R: Future<Output = Result<(), FeedError>>,
{
    let mut attempt = 0;
    loop {
        ctx.set_state(FeedState::Running);
        let started = Instant::now();
        match run(ctx.clone()).await {
            Ok(()) if ctx.is_shutting_down() => {
                ctx.set_state(FeedState::Stopped);
                return;
            }
            Ok(()) => {
                tracing::info!(feed = %name, "feed finished");
                ctx.set_state(FeedState::Finished);
                return;
            }
            Err(FeedError::Fatal(e)) => {
                tracing::error!(feed = %name, error = %e, "feed failed");
                ctx.set_state_because(FeedState::Failed, e);
                return;
            }
            Err(FeedError::Reconnectable(e)) => {
                if started.elapsed() >= HEALTHY {
                    attempt = 0;
                }
                let wait = backoff(attempt);
                attempt += 1;
                tracing::warn!(feed = %name, error = %e, retry_in = ?wait, "feed dropped; reconnecting");
                ctx.set_state_because(FeedState::Reconnecting, e);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.shutdown_signal() => {
                        ctx.set_state(FeedState::Stopped);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::feeds::{FeedKind, FeedStatus, SimSettings};
    use crate::hub::Hub;
    use crate::universe::{parse, BUILTIN_TSV};

    fn context(shutdown: tokio::sync::watch::Receiver<bool>) -> (FeedContext, Arc<FeedStatus>) {
        let settings = FeedSettings {
            name: "flaky".into(),
            start_timeout: Duration::from_secs(1),
            add_symbols: false,
            priority: 0,
            stale_after: Duration::ZERO,
            adapter: FeedKind::Sim(SimSettings {
                quotes_per_sec: 1.0,
                hot_fraction: 0.0,
                hot_share: 0.0,
                seed: 0,
                symbols: vec![],
                start_delay: Duration::ZERO,
            }),
        };
        let status = Arc::new(FeedStatus::new(&settings));
        let hub = Arc::new(Hub::new(
            parse(BUILTIN_TSV).expect("the built-in universe parses"),
        ));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        (
            FeedContext::new(hub, status.clone(), metrics, shutdown),
            status,
        )
    }

    /// Runs that drop after `ups` (how long each stayed up), then a clean stop;
    /// returns how long the supervisor waited before each reconnect.
    async fn waits_between(ups: &[Duration]) -> (Vec<Duration>, FeedState) {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (ctx, status) = context(shutdown);
        let runs = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::new()));
        let (ups, log, stop) = (ups.to_vec(), runs.clone(), Arc::new(stop));
        supervise_runs("flaky", ctx, move |_ctx| {
            let (ups, log, stop) = (ups.clone(), log.clone(), stop.clone());
            async move {
                let n = log.lock().expect("not poisoned").len();
                let started = Instant::now();
                let Some(up) = ups.get(n) else {
                    stop.send(true).expect("the supervisor holds the receiver");
                    return Ok(());
                };
                // The clock is paused: this only advances it.
                tokio::time::sleep(*up).await;
                log.lock()
                    .expect("not poisoned")
                    .push((started, Instant::now()));
                Err(FeedError::Reconnectable("dropped".into()))
            }
        })
        .await;
        let runs = runs.lock().expect("not poisoned").clone();
        // The start of each run after the first is the end of the wait before it.
        let starts_after: Vec<Instant> = runs.iter().skip(1).map(|r| r.0).collect();
        let waits = runs
            .iter()
            .zip(starts_after)
            .map(|(r, next)| next - r.1)
            .collect();
        (waits, status.state())
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Each wait lies within ±25 % of the expected backoff.
    fn assert_backoffs(waits: &[Duration], expected: &[f64]) {
        assert_eq!(waits.len(), expected.len(), "{waits:?}");
        for (w, e) in waits.iter().zip(expected) {
            assert!(
                *w >= secs(e * 0.75) && *w <= secs(e * 1.25),
                "waited {waits:?}, expected about {expected:?} s"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_while_runs_are_short_and_restarts_after_a_healthy_one() {
        let short = Duration::ZERO;
        let ups = [short, short, short, secs(5.0), HEALTHY, short, short];
        let (waits, state) = waits_between(&ups).await;
        // The waits between the seven runs that dropped: after 5 s up the wait
        // still doubles; after a run that stayed up HEALTHY it starts over.
        assert_backoffs(&waits, &[0.5, 1.0, 2.0, 4.0, 0.5, 1.0]);
        assert_eq!(state, FeedState::Stopped);
    }
}
