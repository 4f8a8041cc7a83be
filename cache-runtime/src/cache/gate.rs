//! The way every backend operation goes: first contact (what the server
//! allows, asked once), the circuit breaker, and the op timeout, with what
//! failed counted. [`Cache::health`] reports what it found.

use std::future::Future;

use super::breaker::{Pass, PROBE_EVERY};
use super::health::Health;
use super::Cache;
use crate::backend::deadline::Deadline;
use crate::backend::{Backend, Lookup, Want};
use crate::background;
use crate::entry::EntryKey;
use crate::observe::{bump, metrics, refused};
use crate::Error;

impl Cache {
    /// Whether the cache can serve now, and what the server lets it do:
    /// its role and the user's script rights, checked once on
    /// first contact (the problems are then logged once, at `warn`). Each
    /// call also asks the server, within the op timeout, whether it answers:
    /// a server that does not, or a circuit breaker that is open, is
    /// `reachable: false, serving: false`, so a readiness probe that reads
    /// `serving` fails while every call bypasses the cache.
    ///
    /// Between those, `degraded` says the cache works less than fully, with
    /// a problem for each cause: a server that refused its operations in
    /// the last ten seconds because it is full (`maxmemory` with
    /// `noeviction`), a read-only replica, or a user without a right (each
    /// also logged once at `warn` and counted as `cache_errors_total{kind}`
    /// `oom`, `readonly` or `noperm`), or a breaker that is open.
    pub async fn health(&self) -> Health {
        let deadline = Deadline::after(self.inner.settings.op_timeout);
        let health = match self.contact(deadline).await {
            Ok(health) => health.clone(),
            Err(error) => return unreachable_health(&error),
        };
        let mut health = health.with(self.counters().refusals.recent());
        if let Some(problem) = self.local().and_then(|tier| tier.problem()) {
            health.problems.push(problem.to_owned());
        }
        match self.backend() {
            Backend::Redis(redis) if health.serving => match self.op(redis.ping()).await {
                Ok(()) => health,
                Err(error) => unreachable_health(&error),
            },
            _ => health,
        }
    }

    /// The verdict of first contact, asking the server if it has not
    /// answered yet.
    async fn contact(&self, deadline: Deadline) -> Result<&Health, Error> {
        match self.inner.contact.get() {
            Some(health) => Ok(health),
            // Boxed: its checks would otherwise make every operation's
            // future larger, and a hit moves that future several times.
            None => deadline.bound(Box::pin(self.first_contact())).await,
        }
    }

    async fn first_contact(&self) -> Result<&Health, Error> {
        self.inner
            .contact
            .get_or_try_init(|| async {
                let health = match self.backend() {
                    Backend::Redis(redis) => {
                        let rights = redis.rights().await?;
                        if rights.scripts && !rights.replica {
                            redis.load_scripts().await;
                        }
                        Health::of(Some(rights))
                    }
                    Backend::Memory(_) | Backend::Disabled => Health::of(None),
                };
                for problem in &health.problems {
                    tracing::warn!(
                        problem,
                        "cache: the Redis server limits what the cache can do"
                    );
                }
                Ok(health)
            })
            .await
    }

    /// Whether first contact found that this cache must serve nothing.
    pub(crate) fn refused(&self) -> bool {
        self.inner
            .contact
            .get()
            .is_some_and(|health| !health.serving)
    }

    /// Looks an entry up: in process at once, on Redis as an operation. A
    /// lease it creates carries `token`, chosen (and guarded) by the caller.
    pub(crate) async fn lookup(
        &self,
        group: &str,
        key: &EntryKey,
        want: Want,
        token: &str,
    ) -> Result<Lookup, Error> {
        match self.backend().lookup_in_process(group, key, want, token) {
            Ok(found) => Ok(found),
            // The lookup keeps the deadline itself: a batched read times
            // out once for all its callers, not once for each.
            Err(redis) => {
                self.guarded(|deadline| {
                    // Boxed: the op moves its future into the await; a box
                    // moves as a pointer.
                    Box::pin(redis.lookup(group, key, want, token, deadline))
                })
                .await
            }
        }
    }

    /// Runs one backend operation within the operation timeout, through the
    /// circuit breaker, counting failures.
    pub(crate) async fn op<T>(
        &self,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if let Backend::Memory(_) | Backend::Disabled = self.backend() {
            // In-process and never blocking: no timeout or breaker to pay for.
            return op.await;
        }
        self.guarded(|deadline| deadline.bound(op)).await
    }

    /// [`op`](Self::op) for an operation that keeps its [`Deadline`]
    /// itself: it must end by then, with [`Deadline::elapsed`] if it could
    /// not.
    async fn guarded<T, F>(&self, op: impl FnOnce(Deadline) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let counters = self.counters();
        if self.refused() {
            metrics::bypassed(counters, "refused");
            return Err(Error::Unavailable);
        }
        let breaker = &self.inner.breaker;
        let pass = breaker.pass();
        if pass == Pass::Open {
            // Skipped, not failed: the failures that opened it were counted.
            metrics::bypassed(counters, "breaker_open");
            return Err(Error::Unavailable);
        }
        let deadline = Deadline::after(self.inner.settings.op_timeout);
        let began = breaker.now_ms();
        // First contact is checked within the same bound as the operation.
        let result = match self.contact(deadline).await {
            Ok(health) if health.serving => op(deadline).await,
            Ok(_) => Err(Error::Unavailable),
            Err(error) => Err(error),
        };
        match &result {
            Err(Error::Unavailable) => {
                // Refused on first contact: not a failure of the server.
                metrics::bypassed(counters, "refused");
                self.answered(&pass);
            }
            Err(error) if error.is_unreachable() => {
                if let Backend::Redis(redis) = self.backend() {
                    redis.forget_fills();
                }
                bump(&counters.errors);
                if error.is_timeout() {
                    bump(&counters.timeouts);
                    metrics::error("timeout");
                } else {
                    metrics::error("unreachable");
                }
                if breaker.failed(&pass, began, error.is_timeout()) {
                    bump(&counters.breaker_trips);
                    tracing::warn!(
                        %error,
                        "cache circuit breaker opened: calls skip the cache until Redis answers again"
                    );
                }
                if breaker.is_open() {
                    self.probe_in_background();
                }
            }
            Err(error) => {
                bump(&counters.errors);
                if !refused(counters, error) {
                    metrics::error("backend");
                }
                self.answered(&pass);
            }
            Ok(_) => self.answered(&pass),
        }
        result
    }

    /// The server answered an operation that went through `pass`. If that
    /// closed the breaker, the evictions that failed during the outage are
    /// retried now, while this process's reads settle.
    fn answered(&self, pass: &Pass) {
        if self.inner.breaker.succeeded(pass) {
            self.retrier().now.notify_one();
        }
    }

    /// Whether reads pass the cache by while they settle after an outage
    /// (see `breaker`).
    #[inline]
    pub(crate) fn settling(&self) -> bool {
        self.inner.breaker.settling()
    }
}

impl Cache {
    /// While the breaker is open, asks Redis every [`PROBE_EVERY`], within
    /// the op timeout, whether it answers, and closes the breaker the moment
    /// it does: a dead Redis costs calls nothing, and hits come back within
    /// a probe of Redis answering (its `PING` also makes the connection
    /// reconnect, or Sentinel name the new master), not at the end of a
    /// cool-down. One task per cache; it ends with the cache.
    fn probe_in_background(&self) {
        let breaker = &self.inner.breaker;
        if !matches!(self.backend(), Backend::Redis(_)) || !breaker.start_prober() {
            return;
        }
        let cache = self.downgrade();
        let probing = background::spawn(async move {
            let mut first = true;
            loop {
                // The first probe goes at once: a suspect server is asked
                // while calls skip it, not a probe interval later.
                if !std::mem::take(&mut first) {
                    tokio::time::sleep(PROBE_EVERY).await;
                }
                let Some(cache) = Cache::upgrade(&cache) else {
                    return;
                };
                let breaker = &cache.inner.breaker;
                if !breaker.is_open() {
                    breaker.end_prober();
                    return;
                }
                let Backend::Redis(redis) = cache.backend() else {
                    return;
                };
                let deadline = Deadline::after(cache.settings().op_timeout);
                if deadline.bound(redis.ping()).await.is_ok() {
                    breaker.end_prober();
                    cache.answered(&Pass::Probe);
                    tracing::info!("cache circuit breaker closed: Redis answers again");
                    return;
                }
            }
        });
        if !probing {
            breaker.end_prober(); // callers probe after the cool-down instead
        }
    }
}

fn unreachable_health(error: &Error) -> Health {
    let why = match error {
        Error::Timeout(_) => "no answer within the op timeout".to_owned(),
        Error::Unavailable => "the circuit breaker is open after failures".to_owned(),
        error => error.to_string(),
    };
    Health {
        reachable: false,
        serving: false,
        degraded: true,
        problems: vec![format!(
            "the server does not answer ({why}): calls run their bodies without the cache"
        )],
    }
}
