//! A worker thread's doorbell: where the hub leaves the tokens of that worker's
//! sessions that have news, waking the worker's delivery loop once for all of
//! them (rather than each session's task). An [`Inbox`](super::Inbox) routed
//! to a doorbell rings it instead of waking its session.
//!
//! One quote reaches each worker once: [`Rings`] gathers a quote's signals per
//! doorbell, then each doorbell takes its tokens with one lock and wakes its
//! loop only if nothing was waiting for it already.

use std::cell::RefCell;
use std::sync::Arc;
use std::task::Waker;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

/// Tokens of sessions with news, for one worker's delivery loop.
#[derive(Default)]
pub struct Doorbell {
    tokens: Mutex<Vec<u32>>,
    /// The delivery loop's task.
    waker: AtomicWaker,
}

impl Doorbell {
    pub fn new() -> Doorbell {
        Doorbell::default()
    }

    /// Leaves `tokens`; wakes the loop if nothing was waiting (a ring that
    /// finds tokens waiting comes after one that woke the loop, which has not
    /// taken them yet and will take these with them).
    pub(super) fn ring(&self, tokens: &[u32]) {
        let was_empty = {
            let mut waiting = self.tokens.lock();
            let was_empty = waiting.is_empty();
            waiting.extend_from_slice(tokens);
            was_empty
        };
        if was_empty {
            self.waker.wake();
        }
    }

    /// For the delivery loop: registers `waker` (the next ring wakes it), then
    /// swaps what is waiting into `into`, which must be empty.
    pub fn take(&self, waker: &Waker, into: &mut Vec<u32>) {
        debug_assert!(into.is_empty());
        self.waker.register(waker);
        std::mem::swap(&mut *self.tokens.lock(), into);
    }
}

/// One pass of the hub over a symbol's subscribers: the tokens to leave at
/// each doorbell, rung together by [`Rings::ring_all`]. Kept per thread, so
/// a quote allocates nothing once a feed thread has seen every worker.
#[derive(Default)]
pub(super) struct Rings {
    bells: Vec<(Arc<Doorbell>, Vec<u32>)>,
}

impl Rings {
    /// Runs `f` with this thread's rings, then rings every doorbell it added
    /// tokens for.
    pub fn with(f: impl FnOnce(&mut Rings)) {
        thread_local! {
            static RINGS: RefCell<Rings> = RefCell::default();
        }
        RINGS.with(|rings| {
            // Not re-entered in practice (ringing runs no hub code); if it
            // were, a fresh set rings just as well.
            let mut fresh = Rings::default();
            let mut mine = rings.try_borrow_mut();
            let rings = match &mut mine {
                Ok(mine) => &mut **mine,
                Err(_) => &mut fresh,
            };
            f(rings);
            rings.ring_all();
        })
    }

    pub fn add(&mut self, bell: &Arc<Doorbell>, token: u32) {
        match self.bells.iter_mut().find(|(b, _)| Arc::ptr_eq(b, bell)) {
            Some((_, tokens)) => tokens.push(token),
            None => self.bells.push((bell.clone(), vec![token])),
        }
    }

    fn ring_all(&mut self) {
        for (bell, tokens) in &mut self.bells {
            if !tokens.is_empty() {
                bell.ring(tokens);
                tokens.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn one_wake_per_batch_and_every_token_taken_once() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let bell = Arc::new(Doorbell::new());
        let other = Arc::new(Doorbell::new());
        let mut taken = Vec::new();
        bell.take(&waker, &mut taken);
        assert!(taken.is_empty());

        let mut rings = Rings::default();
        for token in [1, 2, 3] {
            rings.add(&bell, token);
        }
        rings.add(&other, 9);
        rings.ring_all();
        // A second quote before the loop ran: no second wake.
        rings.add(&bell, 4);
        rings.ring_all();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);

        bell.take(&waker, &mut taken);
        assert_eq!(taken, [1, 2, 3, 4]);
        taken.clear();
        // Taken: the next ring wakes the loop again.
        bell.ring(&[5]);
        assert_eq!(woken.0.load(Ordering::SeqCst), 2);
        bell.take(&waker, &mut taken);
        assert_eq!(taken, [5]);
    }
}
