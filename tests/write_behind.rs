//! Durable write-behind: values readable at once, in the database after
//! `flush`, in order and coalesced per key, poison values dead-lettered,
//! `Err` while Redis is down, a dropped writer's entries taken over. On
//! memory, Redis and a cluster. The kill -9 test is in
//! `write_behind_crash.rs`.

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_runtime::{cached, Cache, WriteBehind};
use tokio::sync::{mpsc, Notify};

use support::{eventually, RedisServer};

/// What the table's handler returns.
type Written = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The database: every value the handler wrote, per key, in order.
#[derive(Clone, Default)]
struct Table {
    rows: Arc<Mutex<HashMap<u64, Vec<u64>>>>,
}

impl Table {
    fn insert(&self, key: u64, value: u64) {
        self.rows
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push(value);
    }

    fn history(&self, key: u64) -> Vec<u64> {
        self.rows
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .unwrap_or_default()
    }

    fn last(&self, key: u64) -> Option<u64> {
        self.history(key).last().copied()
    }

    fn len(&self) -> usize {
        self.rows.lock().unwrap().len()
    }

    /// A write-behind handler into this table.
    fn handler(&self) -> impl Fn(u64, u64) -> Written + Send + Sync + 'static {
        let table = self.clone();
        move |key, value| {
            let table = table.clone();
            Box::pin(async move {
                table.insert(key, value);
                Ok(())
            })
        }
    }

    /// A writer of `group` into this table.
    fn writer(&self, cache: &Cache, group: &str) -> WriteBehind<u64, u64> {
        cache
            .write_behind(group, self.handler())
            .delay(Duration::from_millis(20))
            .start()
    }
}

async fn writes_are_readable_at_once_and_in_the_database_after_flush(cache: Cache) {
    let table = Table::default();
    let views = table.writer(&cache, "views");
    for round in 1..=5u64 {
        for key in 0..20u64 {
            views.write(&key, &(round * 100 + key)).await.unwrap();
            assert_eq!(
                cache.get::<u64>("views", &key).await.unwrap(),
                Some(round * 100 + key),
                "a reader sees the write when it returns"
            );
        }
    }
    views.flush().await.unwrap();
    for key in 0..20u64 {
        assert_eq!(
            table.last(key),
            Some(500 + key),
            "flush returned with key {key} written"
        );
        let history = table.history(key);
        assert!(
            history.windows(2).all(|w| w[0] < w[1]),
            "key {key} went backwards: {history:?}"
        );
    }
    // The consumer counts an entry once Redis settled it, which is what
    // flush waits for: the count may trail flush by a moment.
    eventually(Duration::from_secs(5), "the settled count", || async {
        cache.stats().behind_settled == 100
    })
    .await;
    let stats = cache.stats();
    assert_eq!(stats.behind_writes, 100);
    assert_eq!(
        stats.behind_stored,
        table
            .rows
            .lock()
            .unwrap()
            .values()
            .map(Vec::len)
            .sum::<usize>() as u64
    );
}

async fn waiting_writes_of_a_key_coalesce_into_the_newest(cache: Cache) {
    let table = Table::default();
    let (started, mut running) = mpsc::unbounded_channel();
    let gate = Arc::new(Notify::new());
    let views = {
        let (table, gate) = (table.clone(), gate.clone());
        cache
            .write_behind("views", move |key: u64, value: u64| {
                let (table, gate, started) = (table.clone(), gate.clone(), started.clone());
                async move {
                    let _ = started.send(value);
                    if value == 1 {
                        gate.notified().await; // the first call waits for the test
                    }
                    table.insert(key, value);
                    Ok::<(), String>(())
                }
            })
            .delay(Duration::from_millis(10))
            .start()
    };
    views.write(&7, &1).await.unwrap();
    assert_eq!(
        running.recv().await,
        Some(1),
        "the handler took the first write"
    );
    for value in 2..=10u64 {
        views.write(&7, &value).await.unwrap();
    }
    gate.notify_one();
    views.flush().await.unwrap();
    assert_eq!(
        table.history(7),
        vec![1, 10],
        "the nine writes made while the first was being written cost one call, with the newest"
    );
    eventually(Duration::from_secs(5), "the settled count", || async {
        cache.stats().behind_settled == 10
    })
    .await;
    assert_eq!(cache.stats().behind_stored, 2);
}

async fn a_poison_value_goes_to_the_dead_letter_stream(cache: Cache) {
    let table = Table::default();
    let views = {
        let table = table.clone();
        cache
            .write_behind("views", move |key: u64, value: u64| {
                let table = table.clone();
                async move {
                    if key == 13 {
                        return Err(format!("row {key} is locked"));
                    }
                    table.insert(key, value);
                    Ok(())
                }
            })
            .delay(Duration::from_millis(10))
            .max_attempts(3)
            .backoff(Duration::from_millis(10))
            .start()
    };
    for key in 0..50u64 {
        views.write(&key, &(key + 1000)).await.unwrap();
    }
    views.flush().await.unwrap();
    assert_eq!(table.len(), 49, "every other key arrived");
    assert_eq!(table.last(13), None);
    let dead = views.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].key, dead[0].value), (13, 1013));
    assert_eq!(dead[0].error, "row 13 is locked");
    eventually(Duration::from_secs(5), "the dead-letter count", || async {
        cache.stats().behind_dead == 1
    })
    .await;
    assert_eq!(cache.stats().behind_failures, 3);
    // Later writes of the key are tried again, and of others go on.
    views.write(&14, &2014).await.unwrap();
    views.flush().await.unwrap();
    assert_eq!(table.last(14), Some(2014));
}

async fn a_dropped_writer_leaves_its_entries_to_another(cache: Cache) {
    let (taken, mut handed) = mpsc::unbounded_channel();
    let stuck = cache
        .write_behind("views", move |_key: u64, _value: u64| {
            let taken = taken.clone();
            async move {
                let _ = taken.send(());
                std::future::pending::<Result<(), String>>().await // a hung database
            }
        })
        .delay(Duration::from_millis(10))
        .idle_timeout(Duration::from_millis(300))
        .start();
    for key in 0..20u64 {
        stuck.write(&key, &(key + 1)).await.unwrap();
    }
    assert!(
        handed.recv().await.is_some(),
        "the first writer took entries"
    );
    drop(stuck); // stops its consumer mid-write
    let table = Table::default();
    let next = cache
        .write_behind("views", table.handler())
        .delay(Duration::from_millis(10))
        .idle_timeout(Duration::from_millis(300))
        .start();
    eventually(
        Duration::from_secs(10),
        "the second writer to take over the first one's entries",
        || async { table.len() == 20 },
    )
    .await;
    for key in 0..20u64 {
        assert_eq!(table.history(key), vec![key + 1], "key {key} written once");
    }
    drop(next);
}

async fn a_value_that_does_not_decode_is_dead_lettered_at_once(cache: Cache) {
    // Another version of the service wrote text where this one reads numbers.
    let older = cache
        .write_behind("views", |_key: u64, _value: String| async {
            Err::<(), String>("the old writer stops before it writes".to_owned())
        })
        .idle_timeout(Duration::from_millis(200))
        .start();
    older.write(&5, &"five".to_string()).await.unwrap();
    drop(older);
    let table = Table::default();
    let views = cache
        .write_behind("views", table.handler())
        .delay(Duration::from_millis(10))
        .idle_timeout(Duration::from_millis(200))
        .start();
    eventually(
        Duration::from_secs(10),
        "the undecodable value in the dead-letter stream",
        || async { cache.stats().behind_dead == 1 },
    )
    .await;
    assert_eq!(table.len(), 0, "the handler never saw it");
    views.write(&6, &6).await.unwrap();
    views.flush().await.unwrap();
    assert_eq!(table.last(6), Some(6), "and the writer goes on");
}

async fn a_database_down_for_a_while_loses_nothing(cache: Cache) {
    let table = Table::default();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let views = {
        let (table, up) = (table.clone(), up.clone());
        cache
            .write_behind("views", move |key: u64, value: u64| {
                let (table, up) = (table.clone(), up.clone());
                async move {
                    if !up.load(std::sync::atomic::Ordering::SeqCst) {
                        return Err("the database is down".to_owned());
                    }
                    table.insert(key, value);
                    Ok(())
                }
            })
            .delay(Duration::from_millis(10))
            .batch(20)
            .max_attempts(1000)
            .backoff(Duration::from_millis(5))
            .start()
    };
    // More keys than a round takes, while every call fails: the keys that
    // wait a retry hold reading back, and nothing is lost.
    for key in 0..100u64 {
        views.write(&key, &(key + 1)).await.unwrap();
    }
    eventually(
        Duration::from_secs(5),
        "calls to fail while the database is down",
        || async { cache.stats().behind_failures >= 40 },
    )
    .await;
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    views.flush().await.unwrap();
    for key in 0..100u64 {
        assert_eq!(table.history(key), vec![key + 1], "key {key} written once");
    }
    assert_eq!(cache.stats().behind_dead, 0);
}

on_each_backend!(
    writes_are_readable_at_once_and_in_the_database_after_flush,
    waiting_writes_of_a_key_coalesce_into_the_newest,
    a_poison_value_goes_to_the_dead_letter_stream,
    a_dropped_writer_leaves_its_entries_to_another,
    a_value_that_does_not_decode_is_dead_lettered_at_once,
    a_database_down_for_a_while_loses_nothing,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_returns_err_while_redis_is_down_and_works_after() {
    let mut server = RedisServer::start();
    let cache = server.cache().await;
    let table = Table::default();
    let views = table.writer(&cache, "views");
    views.write(&1, &1).await.unwrap();
    server.kill();
    assert!(
        views.write(&2, &2).await.is_err(),
        "a write that could not be made durable is an error"
    );
    server.restart();
    eventually(
        Duration::from_secs(10),
        "writes to succeed again after Redis returned",
        || async { views.write(&3, &3).await.is_ok() },
    )
    .await;
    views.flush().await.unwrap();
    assert_eq!(table.last(3), Some(3));
    assert_eq!(table.last(2), None, "the failed write was not made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_sits_in_the_groups_slot_and_empties_when_settled() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let table = Table::default();
    let views = table.writer(&cache, "views");
    for key in 0..10u64 {
        views.write(&key, &key).await.unwrap();
    }
    let mut redis = server.client().await;
    let waiting: u64 = redis::cmd("XLEN")
        .arg("cache:{views}:wb")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(waiting > 0, "the writes wait in the group's stream");
    views.flush().await.unwrap();
    let left: u64 = redis::cmd("XLEN")
        .arg("cache:{views}:wb")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(left, 0, "settled entries are deleted from the stream");
    let pending: Vec<String> = redis::cmd("KEYS")
        .arg("cache:{views}:wb:p:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        pending.is_empty(),
        "no pending records are left: {pending:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_returns_err_while_redis_is_full_and_nothing_is_half_written() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let cache = server.cache().await;
    let table = Table::default();
    let views = table.writer(&cache, "views");
    views.write(&1, &1).await.unwrap();
    views.flush().await.unwrap();
    let mut redis = server.make_full().await;
    assert!(
        views.write(&1, &2).await.is_err(),
        "Redis refused the write: it is not durable"
    );
    assert_eq!(
        cache.get::<u64>("views", &1u64).await.unwrap(),
        Some(1),
        "the refused write left the cached value as it was, as in the database"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    views.write(&1, &3).await.unwrap();
    views.flush().await.unwrap();
    assert_eq!(table.history(1), vec![1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_stream_rights_gets_err_and_changes_nothing() {
    let server = RedisServer::start();
    let mut admin = server.client().await;
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-@stream",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let url = server.url().replacen("redis://", "redis://app:pw@", 1);
    let cache = Cache::builder().redis(url).build().await.unwrap();
    cache.set("views", &1u64, &1u64, None).await.unwrap();
    let views = Table::default().writer(&cache, "views");
    assert!(
        views.write(&1, &2).await.is_err(),
        "the write could not be logged"
    );
    assert_eq!(
        cache.get::<u64>("views", &1u64).await.unwrap(),
        Some(1),
        "a refused write stored nothing"
    );
}

/// A reader of the views group; 0 when nothing was written.
#[cached(group = "views", cache = cache, skip(cache))]
async fn read_views(cache: &Cache, id: u64) -> u64 {
    let _ = id;
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_drops_local_copies_in_other_processes() {
    let server = RedisServer::start();
    let reader = Cache::builder()
        .redis(server.url())
        .local(1000, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    support::local_tier_ready(&reader).await;
    let cache = server.cache().await;
    let views = Table::default().writer(&cache, "views");
    views.write(&1, &1).await.unwrap();
    // The write's own announcement may reach the reader after its first
    // read, and drop that copy: read until one is kept.
    eventually(
        Duration::from_secs(5),
        "the reader to keep a local copy",
        || async { read_views(&reader, 1).await == 1 && reader.stats().local_hits > 0 },
    )
    .await;
    views.write(&1, &2).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the other cache to drop its local copy",
        || async { read_views(&reader, 1).await == 2 },
    )
    .await;
}
