//! Test support for what the cache logs: run a test under a capturing
//! `tracing` layer, and count the events it logs. (Apart from `support`,
//! which the benches compile without `tracing-subscriber`.)
#![allow(dead_code)] // each test binary uses a part of this module

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::Level;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::Registry;
use tracing_subscriber::Layer;

/// Runs `test` on a current-thread runtime, with `layer` as this thread's
/// subscriber (a multi-thread runtime's workers would not see it).
pub fn run_traced<L, F>(layer: L, test: F) -> F::Output
where
    L: Layer<Registry> + Send + Sync + 'static,
    F: Future,
{
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(test)
}

/// Counts the events at any of `levels` whose message or `error` field
/// holds `text` (any event when `None`).
#[derive(Clone)]
pub struct Logged {
    levels: &'static [Level],
    text: Option<&'static str>,
    count: Arc<AtomicUsize>,
}

impl Logged {
    pub fn new(levels: &'static [Level], text: Option<&'static str>) -> Self {
        Logged {
            levels,
            text,
            count: Arc::default(),
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl<S: tracing::Subscriber> Layer<S> for Logged {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !self.levels.contains(event.metadata().level()) {
            return;
        }
        struct Message<'t>(&'t str, bool);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if matches!(field.name(), "message" | "error") {
                    self.1 |= format!("{value:?}").contains(self.0);
                }
            }
        }
        let matches = match self.text {
            None => true,
            Some(text) => {
                let mut message = Message(text, false);
                event.record(&mut message);
                message.1
            }
        };
        if matches {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }
}
