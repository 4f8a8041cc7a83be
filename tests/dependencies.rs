//! Derived entries: a value that embeds others is fresh on the next read
//! after any of them is written, and every other value stays a hit. Each
//! case runs in memory, on a Redis server and on a 3-master cluster, with
//! two caches: on Redis and the cluster they are two connections, as two
//! processes have; the writer's cache is not the reader's.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{cache_evict, cache_put, cached, Cache, Dep};

use support::{Gate, VersionedDb as Db};

/// Counts the loads of each derived function.
#[derive(Default)]
struct Loads {
    pages: AtomicUsize,
    shelves: AtomicUsize,
    counts: AtomicUsize,
    searches: AtomicUsize,
}

fn count(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

/// The products of a category: 1 holds 1 and 2, 2 holds 3 and 4.
fn ids_in(category: u64) -> Vec<u64> {
    vec![2 * category - 1, 2 * category]
}

#[cached(group = "products", ttl = 60, skip(cache, db), cache = cache)]
async fn get_product(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.read(id)
}

#[cache_evict(group = "products", skip(cache, db), cache = cache)]
async fn update_product(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.bump(id)
}

#[cache_put(group = "products", ttl = 60, skip(cache, db), cache = cache)]
async fn reprice_product(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.bump(id)
}

/// A list page: reads its products through the cache, so depends on them.
#[cached(group = "pages", ttl = 60, skip(cache, db, loads, gate), cache = cache)]
async fn category_page(
    cache: &Cache,
    db: &Db,
    loads: &Loads,
    gate: Option<&Gate>,
    category: u64,
) -> Vec<(u64, u64)> {
    loads.pages.fetch_add(1, Ordering::SeqCst);
    let mut out = Vec::new();
    for id in ids_in(category) {
        out.push((id, get_product(cache, db, id).await));
    }
    if let Some(gate) = gate {
        gate.pass().await;
    }
    out
}

/// A page of pages: depends on the products through the pages.
#[cached(group = "shelves", ttl = 60, skip(cache, db, loads), cache = cache)]
async fn shelf(cache: &Cache, db: &Db, loads: &Loads) -> Vec<Vec<(u64, u64)>> {
    loads.shelves.fetch_add(1, Ordering::SeqCst);
    let mut out = Vec::new();
    for category in [1, 2] {
        out.push(category_page(cache, db, loads, None, category).await);
    }
    out
}

/// A count read without the cache: depends on the whole group by name.
#[cached(group = "counts", ttl = 60, skip(cache, db, loads, gate), cache = cache)]
async fn total(cache: &Cache, db: &Db, loads: &Loads, gate: Option<&Gate>) -> u64 {
    loads.counts.fetch_add(1, Ordering::SeqCst);
    cache_runtime::depend(Dep::group("products"));
    let sum = (1..=4).map(|id| db.read(id)).sum();
    if let Some(gate) = gate {
        gate.pass().await;
    }
    sum
}

/// A search read without the cache: depends on the products it returns.
#[cached(group = "searches", ttl = 60, skip(cache, db, loads, gate), cache = cache,
         depends_on = |hits: &Vec<(u64, u64)>| hits.iter().map(|(id, _)| Dep::key("products", id)).collect::<Vec<_>>())]
async fn search(
    cache: &Cache,
    db: &Db,
    loads: &Loads,
    gate: Option<&Gate>,
    category: u64,
) -> Vec<(u64, u64)> {
    loads.searches.fetch_add(1, Ordering::SeqCst);
    let hits = ids_in(category)
        .into_iter()
        .map(|id| (id, db.read(id)))
        .collect();
    if let Some(gate) = gate {
        gate.pass().await;
    }
    hits
}

/// A bundle priced from its products, written through: it depends on them
/// by name.
#[cache_put(group = "bundles", ttl = 60, key = bundle, skip(cache, db), cache = cache,
            depends_on = |versions: &Vec<u64>| (0..versions.len() as u64).map(|i| Dep::key("products", &(i + 1))).collect::<Vec<_>>())]
async fn reprice_bundle(cache: &Cache, db: &Db, bundle: u64) -> Vec<u64> {
    (1..=2).map(|id| db.read(id)).collect()
}

/// What the pages should show now.
fn page_now(db: &Db, category: u64) -> Vec<(u64, u64)> {
    ids_in(category)
        .into_iter()
        .map(|id| (id, db.read(id)))
        .collect()
}

/// The ways a product is written, each from the writer's cache.
#[derive(Clone, Copy, Debug)]
enum Write {
    Evict,
    Put,
    Set,
    Delete,
    Group,
}

const WRITES: [Write; 5] = [
    Write::Evict,
    Write::Put,
    Write::Set,
    Write::Delete,
    Write::Group,
];

async fn write(cache: &Cache, db: &Db, how: Write, id: u64) {
    match how {
        Write::Evict => {
            update_product(cache, db, id).await;
        }
        Write::Put => {
            reprice_product(cache, db, id).await;
        }
        Write::Set => {
            let version = db.bump(id);
            cache.set("products", &id, &version, None).await.unwrap();
        }
        Write::Delete => {
            db.bump(id);
            cache.delete("products", &id).await.unwrap();
        }
        Write::Group => {
            db.bump(id);
            cache.evict_group("products").await.unwrap();
        }
    }
}

/// Calls `f` until a call stores its value, bounded: a load that names a
/// dependency made or written during it is not stored, so the first load
/// after a record is made stores nothing.
async fn until_stored(
    cache: &Cache,
    group: &str,
    key: &(impl serde::Serialize + ?Sized),
    mut f: impl AsyncFnMut(),
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        f().await;
        if cache.has(group, key).await.unwrap() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no load of {group} was stored within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn a_write_refreshes_the_lists_that_embed_it(reader: Cache, writer: Cache) {
    let (db, loads) = (Db::default(), Loads::default());
    for how in WRITES {
        assert_eq!(
            category_page(&reader, &db, &loads, None, 1).await,
            page_now(&db, 1)
        );
        category_page(&reader, &db, &loads, None, 2).await;
        let before = count(&loads.pages);
        assert_eq!(
            category_page(&reader, &db, &loads, None, 1).await,
            page_now(&db, 1),
            "{how:?}"
        );
        assert_eq!(count(&loads.pages), before, "a hit before the {how:?}");

        write(&writer, &db, how, 2).await;
        assert_eq!(
            category_page(&reader, &db, &loads, None, 1).await,
            page_now(&db, 1),
            "the page that embeds product 2 after a {how:?}"
        );
        assert_eq!(
            count(&loads.pages),
            before + 1,
            "one reload after a {how:?}"
        );
        category_page(&reader, &db, &loads, None, 2).await;
        let reloaded = usize::from(matches!(how, Write::Group));
        assert_eq!(
            count(&loads.pages),
            before + 1 + reloaded,
            "the page without product 2 after a {how:?}: a hit unless its group was evicted"
        );
    }
}

async fn a_write_elsewhere_leaves_dependents_hits(reader: Cache, writer: Cache) {
    let (db, loads) = (Db::default(), Loads::default());
    category_page(&reader, &db, &loads, None, 1).await;
    update_product(&writer, &db, 3).await;
    reprice_product(&writer, &db, 4).await;
    writer.set("products", &9u64, &9u64, None).await.unwrap();
    writer.evict_group("other").await.unwrap();
    assert_eq!(
        category_page(&reader, &db, &loads, None, 1).await,
        page_now(&db, 1)
    );
    assert_eq!(
        count(&loads.pages),
        1,
        "writes outside the page's products keep it a hit"
    );
}

async fn dependencies_are_transitive(reader: Cache, writer: Cache) {
    let (db, loads) = (Db::default(), Loads::default());
    shelf(&reader, &db, &loads).await;
    shelf(&reader, &db, &loads).await;
    assert_eq!(count(&loads.shelves), 1);
    update_product(&writer, &db, 4).await;
    assert_eq!(
        shelf(&reader, &db, &loads).await,
        vec![page_now(&db, 1), page_now(&db, 2)],
        "the shelf shows the page that shows product 4"
    );
    assert_eq!(count(&loads.shelves), 2);
    assert_eq!(
        count(&loads.pages),
        3,
        "the page of product 4 reloaded, the other was a hit"
    );
}

async fn a_load_that_read_before_a_write_is_not_served_after_it(reader: Cache, writer: Cache) {
    let (db, loads) = (Arc::new(Db::default()), Arc::new(Loads::default()));
    let gate = Arc::new(Gate::default());
    let load = {
        let (reader, db, loads, gate) = (reader.clone(), db.clone(), loads.clone(), gate.clone());
        tokio::spawn(async move { category_page(&reader, &db, &loads, Some(&gate), 1).await })
    };
    gate.reached().await; // the page has read product 1
    update_product(&writer, &db, 1).await; // the write returns...
    gate.release.notify_one(); // ...then the page's load stores what it read
    let old = load.await.unwrap();
    assert_ne!(old, page_now(&db, 1), "the load read before the write");
    assert_eq!(
        category_page(&reader, &db, &loads, None, 1).await,
        page_now(&db, 1),
        "the next read after the write"
    );
}

async fn callers_of_a_changed_dependent_wait_for_one_load(reader: Cache, writer: Cache) {
    let (db, loads) = (Arc::new(Db::default()), Arc::new(Loads::default()));
    category_page(&reader, &db, &loads, None, 1).await;
    update_product(&writer, &db, 2).await;
    let gate = Arc::new(Gate::default());
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (reader, db, loads, gate) =
                (reader.clone(), db.clone(), loads.clone(), gate.clone());
            tokio::spawn(async move { category_page(&reader, &db, &loads, Some(&gate), 1).await })
        })
        .collect();
    gate.reached().await; // one of them loads the page again
    tokio::task::yield_now().await;
    gate.release.notify_one();
    for read in readers {
        let shown = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a reader waited past 10 s: a second load is stuck at the gate")
            .unwrap();
        assert_eq!(shown, page_now(&db, 1));
    }
    assert_eq!(
        count(&loads.pages),
        2,
        "16 callers of the changed page, one load"
    );
}

async fn a_group_dependency_follows_every_write_of_the_group(reader: Cache, writer: Cache) {
    let (db, loads) = (Db::default(), Loads::default());
    until_stored(&reader, "counts", &(), async || {
        total(&reader, &db, &loads, None).await;
    })
    .await;
    let before = count(&loads.counts);
    assert_eq!(total(&reader, &db, &loads, None).await, 0);
    assert_eq!(count(&loads.counts), before, "a hit");
    for how in WRITES {
        write(&writer, &db, how, 3).await;
        let sum: u64 = (1..=4).map(|id| db.read(id)).sum();
        assert_eq!(
            total(&reader, &db, &loads, None).await,
            sum,
            "after a {how:?}"
        );
    }
}

async fn a_named_dependency_written_during_the_load_is_not_served(reader: Cache, writer: Cache) {
    let (db, loads) = (Arc::new(Db::default()), Arc::new(Loads::default()));
    until_stored(&reader, "searches", &1u64, async || {
        search(&reader, &db, &loads, None, 1).await;
    })
    .await;
    update_product(&writer, &db, 1).await;
    let gate = Arc::new(Gate::default());
    let load = {
        let (reader, db, loads, gate) = (reader.clone(), db.clone(), loads.clone(), gate.clone());
        tokio::spawn(async move { search(&reader, &db, &loads, Some(&gate), 1).await })
    };
    gate.reached().await; // the search has read product 2
    update_product(&writer, &db, 2).await;
    gate.release.notify_one();
    assert_ne!(
        load.await.unwrap(),
        page_now(&db, 1),
        "the load read before the write"
    );
    assert_eq!(
        search(&reader, &db, &loads, None, 1).await,
        page_now(&db, 1)
    );

    // And a write of a product the search does not return leaves it a hit.
    until_stored(&reader, "searches", &1u64, async || {
        search(&reader, &db, &loads, None, 1).await;
    })
    .await;
    let before = count(&loads.searches);
    update_product(&writer, &db, 3).await;
    assert_eq!(
        search(&reader, &db, &loads, None, 1).await,
        page_now(&db, 1)
    );
    assert_eq!(count(&loads.searches), before);
    update_product(&writer, &db, 2).await;
    assert_eq!(
        search(&reader, &db, &loads, None, 1).await,
        page_now(&db, 1)
    );
    assert_eq!(count(&loads.searches), before + 1);
}

async fn a_group_count_loaded_across_a_write_is_not_served(reader: Cache, writer: Cache) {
    let (db, loads) = (Arc::new(Db::default()), Arc::new(Loads::default()));
    until_stored(&reader, "counts", &(), async || {
        total(&reader, &db, &loads, None).await;
    })
    .await;
    reader.delete("counts", &()).await.unwrap();
    let gate = Arc::new(Gate::default());
    let load = {
        let (reader, db, loads, gate) = (reader.clone(), db.clone(), loads.clone(), gate.clone());
        tokio::spawn(async move { total(&reader, &db, &loads, Some(&gate)).await })
    };
    gate.reached().await;
    update_product(&writer, &db, 2).await;
    gate.release.notify_one();
    assert_eq!(load.await.unwrap(), 0, "the load read before the write");
    assert_eq!(total(&reader, &db, &loads, None).await, 1);
}

async fn a_put_depends_on_what_it_names(reader: Cache, writer: Cache) {
    let db = Db::default();
    until_stored(&reader, "bundles", &7u64, async || {
        reprice_bundle(&writer, &db, 7).await;
    })
    .await;
    assert_eq!(
        reader.get::<Vec<u64>>("bundles", &7u64).await.unwrap(),
        Some(vec![0, 0])
    );
    update_product(&writer, &db, 3).await;
    assert!(
        reader.has("bundles", &7u64).await.unwrap(),
        "product 3 is not in the bundle"
    );
    update_product(&writer, &db, 2).await;
    assert_eq!(
        reader.get::<Vec<u64>>("bundles", &7u64).await.unwrap(),
        None,
        "the bundle embeds product 2"
    );
}

async fn programmatic_reads_are_dependencies_too(reader: Cache, writer: Cache) {
    let db = Db::default();
    let load = || {
        reader.get_or_load("summaries", &1u64, None, || async {
            let a: Option<u64> = reader.get("products", &1u64).await.unwrap();
            let b = get_product(&reader, &db, 2).await;
            (a, b)
        })
    };
    writer.set("products", &1u64, &10u64, None).await.unwrap();
    assert_eq!(load().await.unwrap(), (Some(10), 0));
    writer.set("products", &1u64, &11u64, None).await.unwrap();
    assert_eq!(load().await.unwrap(), (Some(11), 0));
    update_product(&writer, &db, 2).await;
    assert_eq!(load().await.unwrap(), (Some(11), 1));
}

#[tokio::test]
async fn a_value_with_more_dependencies_than_the_limit_is_not_stored() {
    let cache = Cache::builder().max_dependencies(10).build().await.unwrap();
    let db = Db::default();
    let wide = |n: u64| {
        let (cache, db) = (&cache, &db);
        async move {
            cache
                .get_or_load("wide", &n, None, || async move {
                    for id in 0..n {
                        get_product(cache, db, id).await;
                    }
                    n
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(wide(20).await, 20);
    assert!(
        !cache.has("wide", &20u64).await.unwrap(),
        "20 dependencies, over the limit"
    );
    assert_eq!(wide(10).await, 10);
    assert!(cache.has("wide", &10u64).await.unwrap(), "10, within it");
}

// Each case with a reader's and a writer's cache: the same in memory, two
// connections to one server or cluster otherwise.
with_two_caches!(
    a_write_refreshes_the_lists_that_embed_it,
    a_write_elsewhere_leaves_dependents_hits,
    dependencies_are_transitive,
    a_load_that_read_before_a_write_is_not_served_after_it,
    a_group_dependency_follows_every_write_of_the_group,
    a_named_dependency_written_during_the_load_is_not_served,
    a_group_count_loaded_across_a_write_is_not_served,
    programmatic_reads_are_dependencies_too,
    a_put_depends_on_what_it_names,
    callers_of_a_changed_dependent_wait_for_one_load,
);

/// Products padded to 8 KB, so that a few hundred fill a small server.
#[cached(group = "lru_products", ttl = 600, skip(cache, db), cache = cache)]
async fn padded_product(cache: &Cache, db: &Db, id: u64) -> (u64, String) {
    (db.read(id), "x".repeat(8 << 10))
}

#[cache_evict(group = "lru_products", skip(cache, db), cache = cache)]
async fn write_padded(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.bump(id)
}

/// Five padded products from `start`: the versions shown.
#[cached(group = "lru_lists", ttl = 600, skip(cache, db), cache = cache)]
async fn padded_list(cache: &Cache, db: &Db, start: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for id in start..start + 5 {
        out.push(padded_product(cache, db, id).await.0);
    }
    out
}

/// `allkeys-lru` on a server too small for the data evicts entries,
/// dependency records and generations alike; no list is ever served at a
/// version older than a write that returned before the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_evicting_records_never_serves_a_stale_dependent() {
    // Room for four fifths of what the test stores, measured (servers and
    // their allocators differ): the server must evict, and hits remain.
    let server = support::RedisServer::start();
    let mut admin = server.client().await;
    let used = |admin: &mut redis::aio::MultiplexedConnection| {
        let mut admin = admin.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut admin)
                .await
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .expect("used_memory")
        }
    };
    let (reader, writer) = (server.cache().await, server.cache().await);
    let db = Db::default();
    let empty = used(&mut admin).await;
    for start in 0..80 {
        padded_list(&reader, &db, start * 5).await;
    }
    let full = used(&mut admin).await;
    for (name, value) in [
        ("maxmemory", (empty + (full - empty) * 4 / 5).to_string()),
        ("maxmemory-policy", "allkeys-lru".to_owned()),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let (mut stale, mut hits) = (0, 0);
    for i in 0..2_000u64 {
        if i % 10 == 0 {
            write_padded(&writer, &db, (i * 7_919) % 400).await;
        }
        // Half the reads on eight hot lists (which stay), half sweeping
        // all of them (which evicts).
        let start = match i % 2 {
            0 => (i / 2 % 8) * 5,
            _ => (i % 80) * 5,
        };
        let loads = reader.stats().loads;
        let shown = padded_list(&reader, &db, start).await;
        if reader.stats().loads == loads {
            hits += 1;
        }
        let now: Vec<u64> = (start..start + 5).map(|id| db.read(id)).collect();
        if shown != now {
            stale += 1;
        }
    }
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut server.client().await)
        .await
        .unwrap();
    let evicted: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    eprintln!("{evicted} keys evicted, {hits} list hits, {stale} stale");
    assert!(
        evicted > 100,
        "the server evicted {evicted} keys: the case did not exercise allkeys-lru"
    );
    assert!(
        hits > 100,
        "{hits} list hits: the case did not exercise dependents' hits"
    );
    assert_eq!(stale, 0, "stale lists among 2,000 reads");
}

/// A reader with a local tier: what it copies locally is never a value
/// with dependencies, and a read inside a load never reads its copies, so a
/// write in another process is visible through a dependent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_tier_never_serves_a_stale_dependent() {
    let server = support::RedisServer::start();
    let reader = Cache::builder()
        .redis(server.url())
        .local(1_000, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    support::local_tier_ready(&reader).await;
    let writer = server.cache().await;
    let (db, loads) = (Db::default(), Loads::default());
    for round in 0..20u64 {
        let id = 1 + round % 2;
        get_product(&reader, &db, id).await; // a local copy of the product
        category_page(&reader, &db, &loads, None, 1).await;
        update_product(&writer, &db, id).await;
        assert_eq!(
            category_page(&reader, &db, &loads, None, 1).await,
            page_now(&db, 1),
            "round {round}: the page right after another process wrote product {id}"
        );
    }
}

/// A write-behind write is a write: the values that embed its entry are
/// misses on their next read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_behind_write_refreshes_its_dependents() {
    let server = support::RedisServer::start();
    let (reader, writer) = (server.cache().await, server.cache().await);
    let db = Arc::new(Db::default());
    let sink = db.clone();
    let versions = writer
        .write_behind("products", move |id: u64, version: u64| {
            let sink = sink.clone();
            async move {
                while sink.read(id) < version {
                    sink.bump(id);
                }
                Ok::<(), String>(())
            }
        })
        .start();
    let loads = Loads::default();
    category_page(&reader, &db, &loads, None, 1).await;
    versions.write(&2u64, &5u64).await.unwrap();
    assert_eq!(
        category_page(&reader, &db, &loads, None, 1).await,
        vec![(1, 0), (2, 5)],
        "the page shows the written value at once"
    );
    versions.flush().await.unwrap();
    assert_eq!(db.read(2), 5);
}
