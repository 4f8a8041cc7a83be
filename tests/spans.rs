//! A `cache` span per annotated call, checked with a capturing subscriber.
//! Its own test binary: a subscriber set for one thread shares the callsites'
//! interest cache with every test running beside it.

mod logs;

use std::sync::{Arc, Mutex};

use cache_runtime::{cache_evict, cache_put, cached, Cache};
use tracing::span;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[cached(ttl = 60, group = "obs", cache = cache, skip(cache))]
async fn read(cache: &Cache, id: u64) -> u64 {
    tracing::info!("loading");
    id * 10
}

#[cache_put(ttl = 60, group = "obs", cache = cache, key = id)]
async fn write(cache: &Cache, id: u64, value: u64) -> u64 {
    value
}

#[cache_evict(group = "obs", cache = cache, skip(cache))]
async fn remove(cache: &Cache, id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

/// Spans named `cache` as (group, outcome), when they close.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>);

#[derive(Default)]
struct Fields {
    group: String,
    outcome: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "group" => self.group = value.to_owned(),
            "outcome" => self.outcome = value.to_owned(),
            _ => {}
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "cache" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }
    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        // The bodies' events (this file's), as (the span they happen in, "event").
        if event.metadata().target() != module_path!() {
            return;
        }
        let inside = ctx.lookup_current().map_or("none", |span| span.name());
        self.0
            .lock()
            .unwrap()
            .push((inside.to_owned(), "event".to_owned()));
    }
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(fields) = span.extensions().get::<Fields>() {
                let done = (fields.group.clone(), fields.outcome.clone());
                self.0.lock().unwrap().push(done);
            }
        }
    }
}

#[test]
fn each_call_runs_in_a_cache_span_with_its_outcome() {
    let spans = Spans::default();
    logs::run_traced(spans.clone(), async {
        let cache = Cache::in_memory();
        assert_eq!(read(&cache, 1).await, 10);
        assert_eq!(read(&cache, 1).await, 10);
        write(&cache, 1, 11).await;
        assert_eq!(read(&cache, 1).await, 11);
        remove(&cache, 1).await.unwrap();
        let key_too_odd = std::collections::HashMap::from([((1, 2), 3)]);
        bypassed(&cache, key_too_odd).await;
    });
    let seen = spans.0.lock().unwrap().clone();
    let expected = [
        ("cache", "event"), // the body runs in the call's span
        ("obs", "miss"),
        ("obs", "hit"),
        ("obs", "put"),
        ("obs", "hit"),
        ("obs", "evict"),
        ("obs_bypass", "bypass"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(g, o)| ((*g).to_owned(), (*o).to_owned()))
        .collect();
    assert_eq!(seen, expected);
}

/// A key that does not encode (a map with non-string keys): the call runs
/// without the cache.
#[cached(group = "obs_bypass", cache = cache, skip(cache))]
async fn bypassed(cache: &Cache, key: std::collections::HashMap<(u8, u8), u8>) -> u64 {
    key.len() as u64
}

#[cached(group = "obs_fs", ttl = std::time::Duration::from_millis(50), jitter = 0.0,
         fail_safe = 60, cache = cache, skip(cache, down))]
async fn flaky(cache: &Cache, down: bool, id: u64) -> Result<u64, String> {
    if down {
        return Err("the database is down".to_owned());
    }
    Ok(id)
}

/// A kept value standing in for a failure: its span says so, and the
/// failure is logged once, with its error, for the throttle.
#[test]
fn a_value_standing_in_says_so_and_logs_the_failure_once() {
    let spans = Spans::default();
    let warned = logs::Logged::new(&[tracing::Level::WARN], Some("the database is down"));
    let layers = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        spans.clone(),
    );
    let _default = tracing::subscriber::set_default(
        tracing_subscriber::layer::SubscriberExt::with(layers, warned.clone()),
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(async {
            let cache = Cache::in_memory();
            assert_eq!(flaky(&cache, false, 1).await, Ok(1));
            tokio::time::sleep(std::time::Duration::from_millis(80)).await;
            assert_eq!(flaky(&cache, true, 1).await, Ok(1), "stood in");
            // Nothing kept: the failure is returned, and not told as a stand-in.
            assert!(flaky(&cache, true, 2).await.is_err());
        });
    let seen = spans.0.lock().unwrap().clone();
    assert!(
        seen.contains(&("obs_fs".to_owned(), "fail_safe".to_owned())),
        "{seen:?}"
    );
    assert_eq!(
        warned.count(),
        1,
        "told once, with the error it stood in for"
    );
}
