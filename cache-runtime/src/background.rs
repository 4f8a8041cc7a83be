//! The cache's background work: where it runs ([`spawn`]) and how its
//! retry loops wait ([`Backoff`]).

use std::future::Future;
use std::time::Duration;

/// Runs `work` in a task of the runtime at hand; `false`, with nothing run,
/// outside one (each caller says what skipping it costs).
pub(crate) fn spawn(work: impl Future<Output = ()> + Send + 'static) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            drop(runtime.spawn(work));
            true
        }
        Err(_) => false,
    }
}

/// A pause that doubles each time it is taken, up to a cap, and starts over
/// after a success.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    now: Duration,
}

impl Backoff {
    pub(crate) const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            now: first,
        }
    }

    /// The pause to take now; the next one is twice as long, up to the cap.
    pub(crate) fn pause(&mut self) -> Duration {
        let now = self.now;
        self.now = (now * 2).min(self.max);
        now
    }

    /// Back to the first pause, after a success.
    pub(crate) fn reset(&mut self) {
        self.now = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(10), ms(50));
        let pauses: Vec<_> = (0..5).map(|_| backoff.pause()).collect();
        assert_eq!(pauses, [ms(10), ms(20), ms(40), ms(50), ms(50)]);
        backoff.reset();
        assert_eq!(backoff.pause(), ms(10));
    }
}
