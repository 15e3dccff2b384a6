//! Wake-ups for the agent's loop, coalesced.
//!
//! The loop sleeps until something happens: a watched folder changed
//! (the inotify thread), the sender has acknowledgements or room (the
//! sender thread), a signal arrived (the signal thread). Each of these calls
//! [`Waker::wake`] with a reason; the loop's [`Wakes::wait`] returns the set
//! of reasons gathered since it last looked. A reason already pending is
//! not queued again, so a burst of a million inotify events or
//! acknowledgements costs one wake-up and no memory: the loop sees "data
//! changed", not each change.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Why the agent's loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Wake {
    /// A watched file was written to.
    Data = 1,
    /// Files were created, renamed or deleted: scan the paths again.
    Structure = 2,
    /// SIGTERM or SIGINT: deliver what is in flight and stop.
    Shutdown = 4,
    /// The sender has acknowledgements to hand over.
    Acked = 8,
    /// The sender took a batch, or finished: there is room to send again.
    Space = 16,
    /// SIGHUP: read the configuration again and apply what changed.
    Reload = 32,
}

/// The reasons gathered by one [`Wakes::wait`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WakeSet(u8);

impl WakeSet {
    pub fn contains(self, why: Wake) -> bool {
        self.0 & why as u8 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[derive(Debug, Default)]
struct Shared {
    pending: AtomicU8,
    lock: Mutex<()>,
    ready: Condvar,
}

/// The loop's side: waits for wake-ups. Make [`Waker`]s for the threads
/// that wake it with [`Wakes::waker`].
#[derive(Debug, Clone, Default)]
pub struct Wakes {
    shared: Arc<Shared>,
}

/// A thread's side: wakes the loop. Cheap to clone and to call.
#[derive(Debug, Clone)]
pub struct Waker {
    shared: Arc<Shared>,
}

impl Wakes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn waker(&self) -> Waker {
        Waker {
            shared: self.shared.clone(),
        }
    }

    /// The reasons pending now, without waiting; clears them.
    pub fn take(&self) -> WakeSet {
        WakeSet(self.shared.pending.swap(0, Ordering::AcqRel))
    }

    /// Waits until some reason is pending or `timeout` passes; returns the
    /// pending reasons (empty on timeout) and clears them.
    pub fn wait(&self, timeout: Duration) -> WakeSet {
        let deadline = Instant::now() + timeout;
        // A poisoned lock guards no data here: carry on with it.
        let mut guard = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let set = self.take();
            let now = Instant::now();
            if !set.is_empty() || now >= deadline {
                return set;
            }
            guard = match self.shared.ready.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl Waker {
    /// Adds `why` to the pending reasons and wakes the loop if it was not
    /// already due to wake.
    pub fn wake(&self, why: Wake) {
        let before = self.shared.pending.fetch_or(why as u8, Ordering::AcqRel);
        if before == 0 {
            // Under the lock: the loop either sees the reason before it
            // sleeps or is asleep and gets the notification.
            let _guard = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.ready.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_gather_and_a_burst_costs_one_wake_up() {
        let wakes = Wakes::new();
        let w = wakes.waker();
        for _ in 0..100_000 {
            w.wake(Wake::Data);
        }
        w.wake(Wake::Acked);
        let set = wakes.wait(Duration::from_secs(5));
        assert!(set.contains(Wake::Data) && set.contains(Wake::Acked));
        assert!(!set.contains(Wake::Shutdown));
        assert!(wakes.take().is_empty(), "everything was taken at once");
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_wait() {
        let wakes = Wakes::new();
        let w = wakes.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.wake(Wake::Shutdown);
        });
        let set = wakes.wait(Duration::from_secs(60));
        assert!(set.contains(Wake::Shutdown));
        t.join().unwrap();
        assert!(
            wakes.wait(Duration::from_millis(10)).is_empty(),
            "a timeout gives nothing"
        );
    }
}
