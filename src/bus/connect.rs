//! Connecting to NATS: the client reconnects by itself after a drop, waiting
//! [`backoff`] between attempts, and reports connection events (lost, back)
//! on a small channel for the owner to act on.

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;

use super::BusError;
use crate::backoff::backoff;

/// Connection events kept for the owner; more are dropped (only the latest
/// state matters, and the owner also asks the client).
const EVENTS: usize = 64;

/// Connects to `url`, naming the connection `name` (it shows in the server's
/// monitoring).
pub async fn connect(url: &str, name: &str) -> Result<(Client, mpsc::Receiver<Event>), BusError> {
    let (tx, rx) = mpsc::channel(EVENTS);
    let client = ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| backoff(attempts.saturating_sub(1) as u32))
        .event_callback(move |event| {
            let _ = tx.try_send(event);
            async {}
        })
        .connect(url)
        .await
        .map_err(|e| BusError::Connect {
            url: url.to_owned(),
            problem: e.to_string(),
        })?;
    Ok((client, rx))
}
