//! Failed evictions, retried in the background.
//!
//! An eviction that fails (Redis down, hung, or the breaker open) must not be
//! forgotten: until it happens, readers can be served the value it was meant
//! to remove. It is retried with backoff (100 ms doubling to 5 s) for the
//! configured window (`CacheBuilder::eviction_retry`, default 60 s), logged
//! and counted; after that the entry's TTL bounds how long it can be served.

use std::time::{Duration, Instant};

use crate::key::EntryKey;
use crate::stats::bump;
use crate::{Cache, Error};

/// An eviction to retry.
pub(crate) enum Eviction {
    Key(String, EntryKey),
    Group(String),
}

impl Eviction {
    fn group(&self) -> &str {
        match self {
            Eviction::Key(group, _) | Eviction::Group(group) => group,
        }
    }

    async fn run(&self, cache: &Cache) -> Result<(), Error> {
        match self {
            Eviction::Key(group, key) => cache.invalidate(group, key).await.map(drop),
            Eviction::Group(group) => cache.evict_group_unchecked(group).await,
        }
    }
}

/// Queues a failed eviction for retry in the background.
pub(crate) fn queue(cache: &Cache, eviction: Eviction, error: &Error) {
    let counters = cache.counters();
    bump(&counters.evictions_queued);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        bump(&counters.evictions_abandoned);
        tracing::error!(group = eviction.group(), %error, "cache eviction failed outside a runtime; the entry lives until its TTL");
        return;
    };
    tracing::warn!(group = eviction.group(), %error, "cache eviction failed; retrying in the background");
    let cache = cache.clone();
    runtime.spawn(async move {
        let deadline = Instant::now() + cache.settings().eviction_retry;
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            match eviction.run(&cache).await {
                Ok(()) => {
                    bump(&cache.counters().evictions_retried);
                    tracing::info!(group = eviction.group(), "cache eviction succeeded on retry");
                    return;
                }
                Err(error) if Instant::now() >= deadline => {
                    bump(&cache.counters().evictions_abandoned);
                    tracing::error!(
                        group = eviction.group(),
                        %error,
                        "cache eviction given up after the retry window; the entry lives until its TTL"
                    );
                    return;
                }
                Err(_) => {}
            }
        }
    });
}
