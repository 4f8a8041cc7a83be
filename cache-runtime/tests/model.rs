//! The model test: every path at once, checked against a model (guarantees
//! 1, 2, 7 and 8 of docs/design.md).
//!
//! Two caches on one store (two processes) drive a random mix of
//! single-key reads and writes, bulk reads, puts and evictions, the
//! programmatic `get`/`set`/`delete`/`evict_group`, pages that read items
//! through the cache, and HTTP `GET`/`PUT` through the layer, by several
//! callers at once. On Redis, evictions fail for spells (the server refuses
//! `DEL`, or is paused), so writes wait for their retries.
//!
//! Every value is a row's version, and every write makes a new one. The
//! check: no read returns a version older than that of a write which
//! completed before the read began, made through the same cache, or through
//! the other once it has no eviction waiting for a retry; and no response
//! made for one caller reaches another.
//!
//! It runs for a few seconds per store; `MODEL_SECS=300` soaks it longer.
//! A failure prints the seed; `MODEL_SEED=<seed>` replays the mix.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use cache_runtime::http::CacheLayer;
use cache_runtime::{cache_evict, cache_put, cached, Cache};
use support::{eventually, RedisCluster, RedisServer, Store};

/// The ids the mix touches: few, so that operations meet.
const IDS: u64 = 8;

/// The host both processes serve, as two instances behind one name do.
const HOST: &str = "model.example";

/// A table of versioned rows: every write makes a row's next version.
#[derive(Default)]
struct Db {
    rows: Mutex<HashMap<u64, u64>>,
}

impl Db {
    fn read(&self, id: u64) -> u64 {
        *self.rows.lock().unwrap().get(&id).unwrap_or(&0)
    }
    fn write(&self, id: u64) -> u64 {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.entry(id).or_default();
        *row += 1;
        *row
    }
}

#[cached(group = "model", ttl = 60, skip(cache, db), cache = cache)]
async fn item(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.read(id)
}

#[cached(group = "model", ttl = 60, each = ids, skip(cache, db), cache = cache)]
async fn items(cache: &Cache, db: &Db, ids: &[u64]) -> HashMap<u64, u64> {
    ids.iter().map(|id| (*id, db.read(*id))).collect()
}

#[cache_put(group = "model", ttl = 60, key = id, skip(cache, db), cache = cache)]
async fn put(cache: &Cache, db: &Db, id: u64) -> u64 {
    db.write(id)
}

#[cache_put(group = "model", ttl = 60, each = ids, skip(cache, db), cache = cache)]
async fn put_many(cache: &Cache, db: &Db, ids: Vec<u64>) -> HashMap<u64, u64> {
    ids.iter().map(|id| (*id, db.write(*id))).collect()
}

#[cache_evict(group = "model", skip(cache, db), cache = cache)]
async fn remove(cache: &Cache, db: &Db, id: u64) {
    db.write(id);
}

#[cache_evict(group = "model", each = ids, skip(cache, db), cache = cache)]
async fn remove_many(cache: &Cache, db: &Db, ids: Vec<u64>) {
    for id in &ids {
        db.write(*id);
    }
}

/// A page of items, read through the cache: it depends on each.
#[cached(group = "model-pages", ttl = 60, skip(cache, db), cache = cache)]
async fn page(cache: &Cache, db: &Db, ids: Vec<u64>) -> Vec<u64> {
    let mut shown = Vec::with_capacity(ids.len());
    for id in ids {
        shown.push(item(cache, db, id).await);
    }
    shown
}

type AppState = (Cache, Arc<Db>);

fn caller(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .map_or("nobody".to_owned(), |v| v.to_str().unwrap().to_owned())
}

/// An item's page over HTTP, made for its caller.
async fn show(
    State((cache, db)): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> String {
    format!("{} for {}", item(&cache, &db, id).await, caller(&headers))
}

/// A new version of an item, written through.
async fn replace(
    State((cache, db)): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> String {
    format!("{} for {}", put(&cache, &db, id).await, caller(&headers))
}

/// A row that only the HTTP layer caches (ids from [`IDS`] up): read and
/// written by its handlers directly, so that the layer's own entries and
/// writes are all that keep it fresh.
async fn show_row(
    State((_, db)): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> String {
    format!("{} for {}", db.read(IDS + id), caller(&headers))
}

async fn replace_row(
    State((_, db)): State<AppState>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> String {
    format!("{} for {}", db.write(IDS + id), caller(&headers))
}

/// The app of one process: the layer, shared, with write-through.
async fn serve(cache: &Cache, db: &Arc<Db>) -> String {
    let layer = CacheLayer::new("model-http")
        .ttl(Duration::from_secs(60))
        .cache(cache.clone())
        .write_through();
    let app = Router::new()
        .route("/items/{id}", get(show).put(replace))
        .route("/rows/{id}", get(show_row).put(replace_row))
        .route_layer(layer)
        .with_state((cache.clone(), db.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// What the model knows: per cache, the newest version of each row that a
/// completed write through it made; and the writers of each row, which the
/// mix keeps from overlapping (racing writers are the races tests').
struct Model {
    committed: [Mutex<HashMap<u64, u64>>; 2],
    rows: Vec<tokio::sync::Mutex<()>>,
    checked: AtomicUsize,
}

impl Model {
    fn new() -> Self {
        Model {
            committed: Default::default(),
            rows: (0..2 * IDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            checked: AtomicUsize::new(0),
        }
    }

    /// The oldest version a read of `id` through cache `at` may return,
    /// as the read begins.
    fn floor(&self, caches: &[Cache; 2], at: usize, id: u64) -> u64 {
        let of = |i: usize| *self.committed[i].lock().unwrap().get(&id).unwrap_or(&0);
        let other = 1 - at;
        match waiting(&caches[other]) {
            0 => of(at).max(of(other)),
            _ => of(at),
        }
    }

    fn committed(&self, at: usize, id: u64, version: u64) {
        let mut committed = self.committed[at].lock().unwrap();
        let newest = committed.entry(id).or_default();
        *newest = (*newest).max(version);
    }

    fn check(&self, seed: u64, what: &str, id: u64, floor: u64, read: u64) {
        self.checked.fetch_add(1, Ordering::Relaxed);
        assert!(
            read >= floor,
            "seed {seed}: {what} of {id} returned version {read}, older than {floor}, \
             written before the read began"
        );
    }
}

/// Evictions of a cache that wait for their retry.
fn waiting(cache: &Cache) -> u64 {
    let stats = cache.stats();
    stats.evictions_queued - stats.evictions_retried - stats.evictions_abandoned
}

/// Ids for a bulk operation: one to four, distinct, sorted (the order
/// their writers are locked in).
fn some_ids(rng: &mut fastrand::Rng) -> Vec<u64> {
    let n = rng.usize(1..=4);
    let ids: BTreeSet<u64> = (0..n).map(|_| rng.u64(0..IDS)).collect();
    ids.into_iter().collect()
}

struct World {
    caches: [Cache; 2],
    apps: [String; 2],
    db: Arc<Db>,
    model: Model,
    client: reqwest::Client,
    seed: u64,
}

impl World {
    /// One random operation through cache `at`.
    async fn step(&self, at: usize, rng: &mut fastrand::Rng) {
        let (cache, db, model, seed) = (&self.caches[at], &*self.db, &self.model, self.seed);
        let floor = |id| model.floor(&self.caches, at, id);
        match rng.u8(0..14) {
            0 | 1 => {
                let id = rng.u64(0..IDS);
                let floor = floor(id);
                model.check(seed, "item", id, floor, item(cache, db, id).await);
            }
            2 => {
                let ids = some_ids(rng);
                let floors: Vec<u64> = ids.iter().map(|id| floor(*id)).collect();
                let found = items(cache, db, &ids).await;
                for (id, floor) in ids.iter().zip(floors) {
                    model.check(seed, "items", *id, floor, found[id]);
                }
            }
            3 => {
                let ids = some_ids(rng);
                let floors: Vec<u64> = ids.iter().map(|id| floor(*id)).collect();
                let shown = page(cache, db, ids.clone()).await;
                for ((id, floor), read) in ids.iter().zip(floors).zip(shown) {
                    model.check(seed, "page", *id, floor, read);
                }
            }
            4 => {
                let id = rng.u64(0..IDS);
                let floor = floor(id);
                // `Err` is a failing server: no value read.
                if let Ok(Some(read)) = cache.get::<u64>("model", &id).await {
                    model.check(seed, "get", id, floor, read);
                }
            }
            5 => {
                let id = rng.u64(0..IDS);
                let user = ["", "alice", "bob"][rng.usize(0..3)];
                let (route, row) = [("items", id), ("rows", IDS + id)][rng.usize(0..2)];
                let floor = floor(row);
                let mut request = self
                    .client
                    .get(format!("{}/{route}/{id}", self.apps[at]))
                    .header("host", HOST);
                if !user.is_empty() {
                    request = request.header("authorization", user);
                }
                let body = request.send().await.unwrap().text().await.unwrap();
                let (version, made_for) = body.split_once(" for ").expect("a version and a caller");
                let expected = if user.is_empty() { "nobody" } else { user };
                assert_eq!(
                    made_for, expected,
                    "seed {seed}: a response made for one caller reached another"
                );
                model.check(seed, "HTTP GET", row, floor, version.parse().unwrap());
            }
            op => self.write(at, op, rng).await,
        }
        let _ = cache;
    }

    /// One random write through cache `at`, its rows locked.
    async fn write(&self, at: usize, op: u8, rng: &mut fastrand::Rng) {
        let (cache, db, model) = (&self.caches[at], &*self.db, &self.model);
        let ids = match op {
            6 | 7 | 11 => some_ids(rng),
            // A row of the HTTP layer's own, or an item.
            12 => vec![rng.u64(0..IDS) + [0, IDS][rng.usize(0..2)]],
            _ => vec![rng.u64(0..IDS)],
        };
        let mut held = Vec::with_capacity(ids.len());
        for id in &ids {
            held.push(model.rows[*id as usize].lock().await);
        }
        let id = ids[0];
        match op {
            6 => {
                for (id, version) in put_many(cache, db, ids.clone()).await {
                    model.committed(at, id, version);
                }
            }
            7 => {
                remove_many(cache, db, ids.clone()).await;
                ids.iter()
                    .for_each(|id| model.committed(at, *id, db.read(*id)));
            }
            8 => model.committed(at, id, put(cache, db, id).await),
            9 => {
                remove(cache, db, id).await;
                model.committed(at, id, db.read(id));
            }
            10 => {
                let version = db.write(id);
                // A failed store is evicted in the background; either way
                // the write has completed for this process.
                let _ = cache.set("model", &id, &version, None).await;
                model.committed(at, id, version);
            }
            11 => {
                for id in &ids {
                    db.write(*id);
                }
                let _ = cache.evict_group("model").await;
                ids.iter()
                    .for_each(|id| model.committed(at, *id, db.read(*id)));
            }
            12 => {
                let user = ["", "alice"][rng.usize(0..2)];
                let path = match id.checked_sub(IDS) {
                    Some(row) => format!("rows/{row}"),
                    None => format!("items/{id}"),
                };
                let mut request = self
                    .client
                    .put(format!("{}/{path}", self.apps[at]))
                    .header("host", HOST);
                if !user.is_empty() {
                    request = request.header("authorization", user);
                }
                let body = request.send().await.unwrap().text().await.unwrap();
                let version = body.split_once(" for ").expect("a version").0;
                model.committed(at, id, version.parse().unwrap());
            }
            _ => {
                let version = db.write(id);
                let _ = cache.delete("model", &id).await;
                model.committed(at, id, version);
            }
        }
        drop(held);
    }
}

/// How the store misbehaves during a run.
enum Faults<'s> {
    None,
    /// Spells of refused `DEL` (evictions fail, reads are answered), and on
    /// one server, spells of a paused server.
    On(&'s Store),
}

async fn run(caches: [Cache; 2], faults: Faults<'_>) {
    let seed = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let secs: u64 = std::env::var("MODEL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    eprintln!("model: seed {seed}, {secs} s");
    let db = Arc::new(Db::default());
    let apps = [serve(&caches[0], &db).await, serve(&caches[1], &db).await];
    let world = Arc::new(World {
        caches,
        apps,
        db,
        model: Model::new(),
        client: reqwest::Client::new(),
        seed,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut callers = Vec::new();
    for n in 0..6u64 {
        let (world, stop) = (world.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(n));
            while !stop.load(Ordering::Relaxed) {
                world.step((n % 2) as usize, &mut rng).await;
            }
        }));
    }
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut spells = 0;
    while Instant::now() < until {
        let calm = Duration::from_millis(rng.u64(100..400));
        tokio::time::sleep(calm).await;
        if let Faults::On(store) = faults {
            let spell = Duration::from_millis(rng.u64(100..300));
            match (store, rng.bool()) {
                (Store::Server(server), true) => {
                    server.pause();
                    tokio::time::sleep(spell).await;
                    server.resume();
                }
                _ => {
                    refuse_deletes(store, true);
                    tokio::time::sleep(spell).await;
                    refuse_deletes(store, false);
                }
            }
            spells += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("a caller failed its check");
    }
    // Once every retry is done, every read sees every write.
    for cache in &world.caches {
        eventually(
            Duration::from_secs(20),
            "the evictions' retries",
            || async { waiting(cache) == 0 },
        )
        .await;
    }
    let (db, model) = (&*world.db, &world.model);
    for (at, cache) in world.caches.iter().enumerate() {
        let ids: Vec<u64> = (0..IDS).collect();
        let found = items(cache, db, &ids).await;
        let shown = page(cache, db, ids.clone()).await;
        for id in ids {
            let floor = model.floor(&world.caches, at, id);
            model.check(
                seed,
                "item at the end",
                id,
                floor,
                item(cache, db, id).await,
            );
            model.check(seed, "items at the end", id, floor, found[&id]);
            model.check(seed, "page at the end", id, floor, shown[id as usize]);
        }
    }
    let checked = model.checked.load(Ordering::Relaxed);
    eprintln!("model: {checked} reads checked, {spells} fault spells");
    assert!(checked > 100, "the mix ran: {checked} reads checked");
}

/// Makes the servers refuse `DEL`, so that every eviction fails while
/// reads are answered; or accept it again.
fn refuse_deletes(store: &Store, refuse: bool) {
    let rule = if refuse { "-del" } else { "+del" };
    for answer in store.on_every_node(&["ACL", "SETUSER", "default", rule]) {
        assert_eq!(answer.trim(), "OK", "ACL SETUSER default {rule}");
    }
}

async fn fast(store: &Store) -> Cache {
    store
        .builder()
        .op_timeout(Duration::from_millis(150))
        .build()
        .await
        .expect("a cache on the test store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_in_memory() {
    let cache = Cache::in_memory();
    run([cache.clone(), cache], Faults::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_on_redis_with_failed_evictions() {
    let store = Store::Server(RedisServer::start());
    let caches = [fast(&store).await, fast(&store).await];
    run(caches, Faults::On(&store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_on_a_cluster_with_failed_evictions() {
    let store = Store::Cluster(RedisCluster::start(3, 0));
    let caches = [fast(&store).await, fast(&store).await];
    run(caches, Faults::On(&store)).await;
}
