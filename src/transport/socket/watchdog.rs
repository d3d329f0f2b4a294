//! Cuts client connections (WebSocket, SSE) whose socket stopped taking bytes.
//!
//! A session loop runs only when actix's dispatcher polls its body, and the
//! dispatcher stops doing that once its write buffer is full, so a stalled loop
//! cannot notice its own stall. Each worker thread therefore keeps a list of its
//! connections and sweeps it a few times per `write_stall_timeout`:
//! - its last frame taken but not polled since for `write_stall_timeout`: the connection is a slow
//!   consumer; it is marked, and its loop closes with 4008 if it runs again;
//! - still not run after another `write_stall_timeout`: the socket is reset.
//!
//! The list is per thread because a reset goes through the raw descriptor, which
//! is only known to be this connection's on the thread that owns it.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::outgoing::{now_ms, Shared};

thread_local! {
    static WATCHED: RefCell<Vec<Weak<Shared>>> = const { RefCell::new(Vec::new()) };
    static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

/// Adds a connection to this worker's list, starting the sweeper if needed.
/// Call it on the connection's worker thread.
pub(super) fn watch(conn: &Arc<Shared>) {
    let Some(stall) = conn.stall() else { return };
    WATCHED.with_borrow_mut(|w| w.push(Arc::downgrade(conn)));
    if !SWEEPING.replace(true) {
        let every = (stall.timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        actix_web::rt::spawn(sweeper(every));
    }
}

/// Clears the "sweeper running" mark when the sweeper ends, however it ends.
struct Sweeping;

impl Drop for Sweeping {
    fn drop(&mut self) {
        SWEEPING.set(false);
    }
}

async fn sweeper(every: Duration) {
    let _mark = Sweeping;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if sweep(now_ms()) == 0 {
            // Started again by the next connection.
            return;
        }
    }
}

/// One pass over this worker's connections; returns how many are still watched.
fn sweep(now: u64) -> usize {
    WATCHED.with_borrow_mut(|watched| {
        watched.retain(|weak| {
            let Some(conn) = weak.upgrade() else {
                return false;
            };
            if conn.is_gone() {
                return false;
            }
            let (Some(stall), Some(waited)) = (conn.stall(), conn.waiting(now)) else {
                return true;
            };
            let timeout = stall.timeout.as_millis() as u64;
            if !conn.is_stalled() {
                if waited >= timeout {
                    conn.mark_stalled();
                }
                true
            } else if waited >= 2 * timeout {
                stall.resets.inc();
                conn.abort();
                false
            } else {
                true
            }
        });
        watched.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::transport::socket::outgoing::Outgoing;
    use crate::transport::socket::Sink;
    use actix_web::body::MessageBody;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn a_connection_not_polled_after_its_last_frame_is_marked_then_reset() {
        let metrics = Metrics::new();
        let (out, mut body) = Outgoing::new(None, Some(&metrics), Duration::from_millis(300));
        let conn = out.shared();
        let idle = Outgoing::new(None, Some(&metrics), Duration::from_millis(300));
        WATCHED.with_borrow_mut(|w| {
            w.push(Arc::downgrade(&conn));
            w.push(Arc::downgrade(&idle.0.shared()));
        });
        body.drive(async move {
            out.write(|b| b.extend_from_slice(b"[]"));
            std::future::pending::<()>().await
        });
        let mut cx = Context::from_waker(Waker::noop());
        let t0 = now_ms();
        assert!(matches!(
            Pin::new(&mut body).poll_next(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        // The dispatcher's buffer is full: it does not poll the body again.
        assert_eq!(sweep(t0 + 290), 2, "within the timeout");
        assert!(!conn.is_stalled());
        sweep(t0 + 320);
        assert!(
            conn.is_stalled(),
            "its frame was taken 300 ms ago, no poll since"
        );
        assert!(
            !idle.0.shared().is_stalled(),
            "an idle connection is never stalled"
        );
        sweep(t0 + 400);
        assert!(conn.is_stalled(), "still marked, not yet reset");
        assert_eq!(sweep(t0 + 620), 1, "reset and dropped from the list");
        assert_eq!(metrics.slow_consumer_resets.get(), 1);
        assert!(matches!(
            Pin::new(&mut body).poll_next(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));
        drop((body, idle));
        assert_eq!(sweep(now_ms()), 0, "gone connections leave the list");
    }
}
