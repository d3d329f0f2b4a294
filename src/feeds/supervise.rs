//! Supervision: an adapter runs until shutdown; a reconnectable error is retried
//! after a capped, jittered [`backoff`], a fatal one ends it.

use super::{FeedContext, FeedError, FeedSettings, FeedState};
use crate::backoff::backoff;

/// Runs an adapter until shutdown: a reconnectable error is retried after
/// [`backoff`], a fatal one ends it.
pub async fn supervise(settings: FeedSettings, mut ctx: FeedContext) {
    let name = settings.name().to_owned();
    let mut attempt = 0;
    loop {
        ctx.set_state(FeedState::Running);
        match settings.adapter.run(ctx.clone()).await {
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
