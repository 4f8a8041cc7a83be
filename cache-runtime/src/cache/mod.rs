//! [`Cache`], the handle every annotated call, layer and API call runs on:
//! its backend, settings and the state the flows keep (flights, pending
//! evictions, the local tier). Its public methods, the programmatic API,
//! are in `api`, above the flows they run.
//!
//! - [`builder`]: [`CacheBuilder`](crate::CacheBuilder) and the settings;
//! - [`gate`]: every backend operation's way through first contact, the
//!   circuit breaker ([`breaker`]) and the op timeout;
//! - [`ambient`]: the cache an attribute uses when it names none;
//! - [`health`]: what [`Cache::health`] reports.

pub(crate) mod ambient;
pub(crate) mod breaker;
pub(crate) mod builder;
mod gate;
pub(crate) mod health;

use std::any::Any;
use std::sync::Arc;

use crate::backend::Backend;
use crate::consistency::flight::Flights;
use crate::consistency::pending::{Pending, Retrier};
use crate::entry::envelope::{self, Meta};
use crate::entry::shared::{Kept, Reader};
use crate::entry::EntryKey;
use crate::local::Local;
use crate::observe::{bump, Counters, Warning};
use breaker::Breaker;
use builder::Settings;
use health::Health;

/// A cache: a backend (Redis or in memory) with its settings.
///
/// `Cache` is a cheap [`Clone`] handle: clones share the backend and its
/// connection. Keys are any `K: Serialize + ?Sized` and address the same
/// entries as the attributes: `cache.get::<Product>("products", &7u64)` reads
/// what `#[cached(group = "products")] async fn get_product(id: u64)` stored
/// for `get_product(7)`.
///
/// ```
/// use cache_runtime::Cache;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = Cache::in_memory();
/// cache.set("users", &42u64, &"Ada".to_string(), None).await?;
/// assert_eq!(cache.get::<String>("users", &42u64).await?, Some("Ada".to_string()));
/// assert!(cache.delete("users", &42u64).await?);
/// assert!(!cache.has("users", &42u64).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    backend: Backend,
    settings: Settings,
    flights: Flights,
    breaker: Breaker,
    counters: Arc<Counters>,
    pending: Pending,
    retrier: Retrier,
    local: Option<Arc<Local>>,
    /// What the server lets the cache do, once it has answered.
    contact: tokio::sync::OnceCell<Health>,
    /// State that a module above keeps per cache (the write-behind's
    /// in-process logs), by type.
    extensions: Extensions,
}

/// Values of any type, one per type.
#[derive(Default)]
struct Extensions {
    values: parking_lot::Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl Extensions {
    fn get_or_default<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut values = self.values.lock();
        if let Some(found) = values
            .iter()
            .find_map(|v| Arc::clone(v).downcast::<T>().ok())
        {
            return found;
        }
        let made = Arc::new(T::default());
        values.push(made.clone());
        made
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.inner.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
            Backend::Disabled => "disabled",
        };
        f.debug_struct("Cache")
            .field("backend", &backend)
            .field("default_ttl", &self.inner.settings.default_ttl)
            .field("op_timeout", &self.inner.settings.op_timeout)
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub(crate) fn from_parts(
        backend: Backend,
        settings: Settings,
        counters: Arc<Counters>,
        local: Option<Arc<Local>>,
    ) -> Self {
        Cache {
            inner: Arc::new(Inner {
                breaker: Breaker::new(
                    settings.breaker_threshold,
                    settings.breaker_cool_down,
                    settings.op_timeout,
                ),
                backend,
                settings,
                flights: Flights::default(),
                counters,
                pending: Pending::default(),
                retrier: Retrier::default(),
                local,
                contact: tokio::sync::OnceCell::new(),
                extensions: Extensions::default(),
            }),
        }
    }

    /// Whether this is [`Cache::disabled`].
    #[cfg(feature = "http")]
    pub(crate) fn is_disabled(&self) -> bool {
        matches!(self.inner.backend, Backend::Disabled)
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub(crate) fn codec(&self) -> &crate::entry::codec::ValueCodec {
        &self.inner.settings.codec
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    /// This cache's one `T`, made on first use: state that a module above
    /// keeps per cache without the cache naming its type.
    pub(crate) fn extension<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        self.inner.extensions.get_or_default()
    }

    /// The local tier, when there is one.
    pub(crate) fn local(&self) -> Option<&Local> {
        self.inner.local.as_deref()
    }

    /// Evictions pending retry in this process.
    pub(crate) fn pending(&self) -> &Pending {
        &self.inner.pending
    }

    pub(crate) fn retrier(&self) -> &Retrier {
        &self.inner.retrier
    }

    /// A handle that does not keep the cache alive (for its background task).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The cache of a handle made by [`Cache::downgrade`], while one lives.
    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Cache> {
        weak.upgrade().map(|inner| Cache { inner })
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Opens an envelope, or clones the value it was opened to before; an
    /// entry that does not decode (or is larger than the maximum value size)
    /// is logged, counted and `None`.
    pub(crate) fn open<T>(
        &self,
        group: &str,
        key: &EntryKey,
        kept: &Arc<Kept>,
        reader: &Reader<T>,
    ) -> Option<(T, Meta)> {
        if let Some(opened) = kept.opened(reader) {
            return Some(opened);
        }
        let bytes = kept.bytes();
        let opened = if bytes.len() > self.inner.settings.max_value_size {
            Err(envelope::OpenError::TooLarge(bytes.len()))
        } else {
            (reader.open)(self.codec(), bytes)
        };
        match opened {
            Ok(opened) => {
                // Only an envelope that others hold, or that the local tier
                // will, is read again: a lone Redis hit's is dropped next.
                if Arc::strong_count(kept) > 1 || self.local().is_some() {
                    kept.keep(reader, &opened);
                }
                Some(opened)
            }
            Err(envelope::OpenError::Type(reader)) if self.counters().first_mismatch(group) => {
                bump(&self.counters().undecodable);
                tracing::warn!(
                    group,
                    key = key.as_str(),
                    reader,
                    "cache entry was stored for another type than it is read as: two functions, \
                     or two instantiations of a generic function, share this group with different \
                     value types, and each overwrites the other's entries; give each its own \
                     `group` (or `key`). Said once per group"
                );
                None
            }
            Err(error) => {
                let counters = self.counters();
                bump(&counters.undecodable);
                counters.warn_limited(Warning::Undecodable, |count| {
                    tracing::warn!(group, key = key.as_str(), %error, count, "cache entry does not decode; treating it as a miss");
                });
                None
            }
        }
    }
}
