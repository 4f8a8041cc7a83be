//! Guarantees 1 and 2 (docs/design.md) under forced interleavings, and a
//! randomized stress test checked against a model of the database, on both
//! backends.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached, Cache};

/// Versioned rows: every write bumps the row's version.
use support::{Gate, VersionedDb as Db};

#[cached(group = "rows", skip(cache, db, gate), cache = cache)]
async fn read_row(cache: &Cache, db: &Db, gate: Option<&Gate>, id: u64) -> u64 {
    let version = db.read(id);
    if let Some(gate) = gate {
        gate.pass().await;
    }
    version
}

#[cache_evict(group = "rows", skip(cache, db), cache = cache)]
async fn update_row(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.bump(id)
}

#[cache_put(group = "rows", skip(cache, db, gate), cache = cache)]
async fn put_row(cache: &Cache, db: &Db, gate: Option<&Gate>, id: u64) -> u64 {
    let version = db.bump(id);
    if let Some(gate) = gate {
        gate.pass().await;
    }
    version
}

#[cache_evict(group = "rows", all, cache = cache)]
async fn update_all(cache: &Cache, db: &Db) -> u64 {
    db.bump(7)
}

#[derive(Clone, Copy, Debug)]
enum Writer {
    Evict,
    Put,
    EvictGroup,
    Delete,
}

/// A read misses and loads version 0, a write completes (version 1), then the
/// read stores: the next read must see version 1.
async fn stale_set_race(cache: Cache, writer: Writer) {
    let db = Arc::new(Db::default());
    let gate = Arc::new(Gate::default());
    let reader = tokio::spawn({
        let (cache, db, gate) = (cache.clone(), db.clone(), gate.clone());
        async move { read_row(&cache, &db, Some(&gate), 7).await }
    });
    gate.reached().await; // the reader has loaded version 0
    match writer {
        Writer::Evict => drop(update_row(&cache, &db, 7).await),
        Writer::Put => drop(put_row(&cache, &db, None, 7).await),
        Writer::EvictGroup => drop(update_all(&cache, &db).await),
        Writer::Delete => {
            db.bump(7);
            cache.delete("rows", &7u64).await.unwrap();
        }
    }
    gate.release.notify_one();
    assert_eq!(
        reader.await.unwrap(),
        0,
        "the slow reader returns what it loaded"
    );
    assert_eq!(
        read_row(&cache, &db, None, 7).await,
        1,
        "after a {writer:?} returned, a read that began before it must not have stored its stale value"
    );
}

async fn stale_set_after_evict(cache: Cache) {
    stale_set_race(cache, Writer::Evict).await;
}
async fn stale_set_after_put(cache: Cache) {
    stale_set_race(cache, Writer::Put).await;
}
async fn stale_set_after_group_eviction(cache: Cache) {
    stale_set_race(cache, Writer::EvictGroup).await;
}
async fn stale_set_after_delete(cache: Cache) {
    stale_set_race(cache, Writer::Delete).await;
}

/// Two puts whose database writes land in one order and whose stores would
/// land in the other: the cache holds the last write or nothing.
async fn overlapping_puts_leave_the_last_write_or_nothing(cache: Cache) {
    let db = Arc::new(Db::default());
    let (first, second) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
    let spawn_put = |gate: Arc<Gate>| {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(async move { put_row(&cache, &db, Some(&gate), 7).await })
    };
    let p1 = spawn_put(first.clone());
    first.reached().await; // p1 wrote version 1
    let p2 = spawn_put(second.clone());
    second.reached().await; // p2 wrote version 2
    first.release.notify_one();
    assert_eq!(p1.await.unwrap(), 1); // the older write stores first...
    second.release.notify_one();
    assert_eq!(p2.await.unwrap(), 2); // ...then the newer one
    let cached = cache.get::<u64>("rows", &7u64).await.unwrap();
    assert!(
        matches!(cached, None | Some(2)),
        "cache holds {cached:?}, database holds 2"
    );

    // and the reverse order of completion
    let (first, second) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
    let p3 = spawn_put(first.clone());
    first.reached().await; // version 3
    let p4 = spawn_put(second.clone());
    second.reached().await; // version 4
    second.release.notify_one();
    assert_eq!(p4.await.unwrap(), 4);
    first.release.notify_one();
    assert_eq!(p3.await.unwrap(), 3);
    let cached = cache.get::<u64>("rows", &7u64).await.unwrap();
    assert!(
        matches!(cached, None | Some(4)),
        "cache holds {cached:?}, database holds 4"
    );
    assert_eq!(read_row(&cache, &db, None, 7).await, 4);

    // puts that do not overlap: the last one is stored
    put_row(&cache, &db, None, 7).await;
    put_row(&cache, &db, None, 7).await;
    assert_eq!(cache.get::<u64>("rows", &7u64).await.unwrap(), Some(6));
}

/// Readers and writers at random over a few keys. Every read must return a
/// version at least as new as every write that completed before it began, and
/// at the end every cached value must equal the database.
async fn randomized_readers_and_writers(cache: Cache) {
    const KEYS: u64 = 4;
    let seed = fastrand::u64(..);
    let db = Arc::new(Db::default());
    let completed: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let (cache, db, completed) = (cache.clone(), db.clone(), completed.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ task);
            for _ in 0..250 {
                let id = rng.u64(0..KEYS);
                let floor = completed[id as usize].load(Ordering::SeqCst);
                let roll = rng.u8(0..100);
                if roll < 70 {
                    let version = slow_read(&cache, &db, id, rng.u64(0..3)).await;
                    assert!(
                        version >= floor,
                        "seed {seed}: key {id} read version {version} after version {floor} was written"
                    );
                    continue;
                }
                let version = if roll < 80 {
                    update_row(&cache, &db, id).await
                } else if roll < 97 {
                    put_row(&cache, &db, None, id).await
                } else {
                    let version = db.bump(id);
                    cache.evict_group("rows").await.unwrap();
                    version
                };
                completed[id as usize].fetch_max(version, Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for id in 0..KEYS {
        let cached = cache.get::<u64>("rows", &id).await.unwrap();
        assert!(
            cached.is_none() || cached == Some(db.read(id)),
            "seed {seed}: key {id} cached {cached:?}, database {}",
            db.read(id)
        );
    }
}

#[cached(group = "rows", skip(cache, db, delay_ms), cache = cache)]
async fn slow_read(cache: &Cache, db: &Db, id: u64, delay_ms: u64) -> u64 {
    let version = db.read(id);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    version
}

on_each_backend!(
    stale_set_after_evict,
    stale_set_after_put,
    stale_set_after_group_eviction,
    stale_set_after_delete,
    overlapping_puts_leave_the_last_write_or_nothing,
    randomized_readers_and_writers,
);
