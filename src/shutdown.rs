//! [`Shutdown`]: the one shutdown signal, set in one place ([`Shutdown::begin`])
//! and seen two ways. Every worker's delivery loop waits for it and tells its
//! connections, whose drivers then see [`Shutdown::has_begun`]; a connection
//! outside such a loop (SSE, long-polling, WebRTC) waits for it on every turn
//! of its driver, so that wait ([`Shutdown::wait`]) must cost next to nothing once registered:
//! one atomic load, and a waker compared with the one already registered. (A
//! `watch` or `Notify` wait takes the channel's one mutex on each poll, shared
//! by every connection of every worker.) The mutex here is taken when a
//! connection starts and stops waiting and once at shutdown. The few
//! long-lived tasks (feeds, the bus publisher, WebRTC's UDP task) take a
//! `watch` receiver ([`Shutdown::watch`]), which `begin` sets too.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::watch;

/// Set once, at shutdown; wakes every waiting connection and task.
pub struct Shutdown {
    set: AtomicBool,
    next: AtomicU64,
    waiters: Mutex<HashMap<u64, Waker>>,
    tasks: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown {
            set: AtomicBool::new(false),
            next: AtomicU64::new(0),
            waiters: Mutex::default(),
            tasks: watch::Sender::new(false),
        }
    }
}

impl Shutdown {
    /// Shutdown begins: every wait resolves and every `watch` turns `true`,
    /// now and from now on.
    pub fn begin(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.tasks.send_replace(true);
        let waiters = std::mem::take(&mut *self.lock());
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// True once [`Shutdown::begin`] was called.
    pub fn has_begun(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// For a long-lived task: a receiver that turns `true` at shutdown.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.tasks.subscribe()
    }

    /// A future that resolves at shutdown (at once if it began).
    pub fn wait(self: &Arc<Self>) -> ShutdownWait {
        ShutdownWait {
            shutdown: self.clone(),
            key: self.next.fetch_add(1, Ordering::Relaxed),
            registered: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Waker>> {
        // A waker's wake or drop panicking cannot leave the map half-changed.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// See [`Shutdown::wait`].
pub struct ShutdownWait {
    shutdown: Arc<Shutdown>,
    key: u64,
    /// The waker registered under `key`, if any.
    registered: Option<Waker>,
}

impl Future for ShutdownWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.has_begun() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let waker = cx.waker().clone();
        self.shutdown.lock().insert(self.key, waker.clone());
        self.registered = Some(waker);
        // Registered before looking again: a shutdown in between either is
        // seen here or finds the waker in the map.
        if self.shutdown.has_begun() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for ShutdownWait {
    fn drop(&mut self) {
        if self.registered.is_some() {
            self.shutdown.lock().remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::{waker, ArcWake};
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);

    impl ArcWake for Count {
        fn wake_by_ref(count: &Arc<Self>) {
            count.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_waiting_connection_wakes_once_at_shutdown_and_a_late_one_at_once() {
        let closing = Arc::new(Shutdown::default());
        let mut task = closing.watch();
        assert!(!*task.borrow_and_update());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = waker(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut waits: Vec<_> = (0..50).map(|_| Box::pin(closing.wait())).collect();
        for _ in 0..2 {
            for w in &mut waits {
                assert!(w.as_mut().poll(&mut cx).is_pending());
            }
        }
        assert_eq!(closing.lock().len(), 50, "one registration per wait");
        waits.truncate(40);
        assert_eq!(closing.lock().len(), 40, "a dropped wait leaves nothing");

        std::thread::spawn({
            let closing = closing.clone();
            move || closing.begin()
        })
        .join()
        .unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 40);
        assert!(task.has_changed().unwrap() && *task.borrow());
        assert!(
            *closing.watch().borrow(),
            "a task that looks late sees it too"
        );
        for w in &mut waits {
            assert!(w.as_mut().poll(&mut cx).is_ready());
        }
        let mut late = Box::pin(closing.wait());
        assert!(late.as_mut().poll(&mut cx).is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 40);
    }
}
