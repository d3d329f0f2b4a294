//! `replay`: plays a recorded NDJSON session (one quote object per line, keys of
//! PROTOCOL.md section 1, `t` in ms) at recorded speed, a multiple of it, or as fast
//! as possible; once or looping. A malformed line is counted and logged with its line
//! number, never fatal.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{AdapterSettings, FeedAdapter, FeedContext, FeedError, Invalid};
use crate::quote::QuoteUpdate;

/// `kind = "replay"`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySettings {
    /// The recording: one quote object per line.
    pub file: PathBuf,
    /// 1 = recorded speed, 4 = four times faster, 0 = as fast as possible.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Start over at the end (timestamps shifted forward).
    #[serde(default, rename = "loop")]
    pub looping: bool,
}

fn default_speed() -> f64 {
    1.0
}

impl AdapterSettings for ReplaySettings {
    type Adapter = ReplayFeed;

    fn validate(&self) -> Result<(), Invalid> {
        if !(self.speed.is_finite() && self.speed >= 0.0) {
            return Err(Invalid::new("speed", "must be 0 (no pacing) or positive"));
        }
        if !self.file.exists() {
            return Err(Invalid::new(
                "file",
                format!("{} does not exist", self.file.display()),
            ));
        }
        Ok(())
    }

    fn build(&self, _ctx: &FeedContext) -> Result<ReplayFeed, FeedError> {
        Ok(ReplayFeed::new(self))
    }
}

/// Log at most this many bad lines per pass (the rest are only counted).
const MAX_LOGGED_BAD_LINES: usize = 20;

pub struct ReplayFeed {
    file: PathBuf,
    speed: f64,
    looping: bool,
}

impl ReplayFeed {
    pub fn new(settings: &ReplaySettings) -> ReplayFeed {
        ReplayFeed {
            file: settings.file.clone(),
            speed: settings.speed,
            looping: settings.looping,
        }
    }
}

/// Parses the recording; returns the good updates (with line numbers) and the
/// bad lines' numbers and reasons.
pub fn parse_recording(text: &str) -> (Vec<QuoteUpdate>, Vec<(usize, String)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<QuoteUpdate>(line) {
            Ok(u) => good.push(u),
            Err(e) => bad.push((i + 1, e.to_string())),
        }
    }
    (good, bad)
}

impl FeedAdapter for ReplayFeed {
    async fn run(self, mut ctx: FeedContext) -> Result<(), FeedError> {
        let text = tokio::fs::read_to_string(&self.file).await.map_err(|e| {
            FeedError::Reconnectable(format!("cannot read {}: {e}", self.file.display()))
        })?;
        let (updates, bad) = parse_recording(&text);
        for (n, (line, why)) in bad.iter().enumerate() {
            ctx.rejected("malformed");
            if n < MAX_LOGGED_BAD_LINES {
                tracing::warn!(feed = %ctx.status().name, file = %self.file.display(), line, error = %why, "skipping malformed line");
            }
        }
        if updates.is_empty() {
            return Err(FeedError::Fatal(format!(
                "{} holds no valid quote lines",
                self.file.display()
            )));
        }
        let first_t = updates[0].t;
        let last_t = updates.iter().map(|u| u.t).max().unwrap_or(first_t);
        let span = (last_t - first_t).max(0) + 1;
        let mut pass: i64 = 0;
        loop {
            let start = Instant::now();
            let shift = pass * span;
            for (i, u) in updates.iter().enumerate() {
                if self.speed > 0.0 {
                    let offset_ms = (u.t - first_t).max(0) as f64 / self.speed;
                    let due = start + Duration::from_secs_f64(offset_ms / 1000.0);
                    if due > Instant::now() {
                        tokio::select! {
                            _ = ctx.shutdown_signal() => return Ok(()),
                            _ = tokio::time::sleep_until(due) => {}
                        }
                    }
                } else if i % 1024 == 0 {
                    if ctx.is_shutting_down() {
                        return Ok(());
                    }
                    tokio::task::yield_now().await;
                }
                let mut u = u.clone();
                u.t += shift;
                if let Err(e) = ctx.publish(&u) {
                    tracing::debug!(feed = %ctx.status().name, error = %e, "update refused");
                }
            }
            if !self.looping || ctx.is_shutting_down() {
                return Ok(());
            }
            pass += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_reported_by_number_and_skipped() {
        let text = "{\"sym\":\"AAPL\",\"t\":1,\"bp\":\"1.00\"}\nnot json\n\n{\"sym\":\"AAPL\"}\n{\"sym\":\"AAPL\",\"t\":2,\"bp\":1.5}\n{\"sym\":\"MSFT\",\"t\":3,\"seq\":9}\n";
        let (good, bad) = parse_recording(text);
        assert_eq!(good.len(), 2);
        let lines: Vec<usize> = bad.iter().map(|b| b.0).collect();
        assert_eq!(lines, [2, 4, 5]);
    }

    #[test]
    fn shipped_sample_parses_cleanly() {
        let text = include_str!("../../feeds/sample-session.ndjson");
        let (good, bad) = parse_recording(text);
        assert!(bad.is_empty(), "{bad:?}");
        assert!(good.len() > 1000);
    }
}
