//! The driver's one timer (heartbeat, client timeout, throttle, stall):
//! for a connection its worker's delivery loop serves, an entry in the
//! worker's alarms, which kick the driver when it is due; a tokio timer of
//! its own otherwise (SSE, long-polling, WebRTC).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::time::{Instant, Sleep};

use super::super::pump::Registration;

pub(super) enum Timer {
    /// The worker's alarm: the connection's place in its loop.
    Worker(Registration),
    /// Boxed: the few that have one keep it out of the many's future.
    Own(Pin<Box<Sleep>>),
}

impl Timer {
    /// The worker's alarms with a registration, a timer of its own (due
    /// at `at`) without.
    pub fn new(registration: Option<Registration>, at: Instant) -> Timer {
        match registration {
            Some(r) => Timer::Worker(r),
            None => Timer::Own(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Whether the worker's loop serves the connection.
    pub fn worker(&self) -> bool {
        matches!(self, Timer::Worker(_))
    }

    /// Makes `at` the deadline; `armed` is where the driver keeps it (the
    /// worker's loop reads it too).
    pub fn set(&mut self, armed: &Cell<Option<Instant>>, at: Instant) {
        match self {
            Timer::Worker(r) => r.set_timer(armed.get(), Some(at)),
            Timer::Own(sleep) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
            }
        }
        armed.set(Some(at));
    }

    /// Resolves once the deadline in `armed` has come. The worker's alarm
    /// wakes the driver through its kick, which the driver waits for too.
    pub fn fired<'a>(
        &'a mut self,
        armed: &'a Cell<Option<Instant>>,
    ) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| match self {
            Timer::Own(sleep) => sleep.as_mut().poll(cx),
            Timer::Worker(_) => {
                if armed.get().is_some_and(|at| Instant::now() >= at) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        })
    }

    /// Clears the deadline and leaves the worker's loop.
    pub fn end(self, armed: &Cell<Option<Instant>>) {
        if let Timer::Worker(r) = self {
            r.set_timer(armed.get(), None);
        }
        armed.set(None);
    }
}
