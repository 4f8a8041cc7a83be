//! The local tier's feed: what keeps its copies from outliving a change to
//! the entries they copy.
//!
//! The feed is Redis client tracking, broadcast on the cache's prefix
//! (`CLIENT TRACKING ON BCAST PREFIX`), on a RESP3 connection of its own to
//! the server (the master Sentinel names; on a cluster, one to each master,
//! made again when the masters change): Redis pushes the name of every key
//! under the prefix that any client changes, deletes, or that the server
//! expires or evicts, and a null for `FLUSHALL`/`FLUSHDB`. While the feed
//! is down, or open but silent, the tier is flushed and bypassed; where the
//! server or the user refuses tracking, the tier stays off and says why.

use std::sync::Weak;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, PushInfo, PushKind, RedisError};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Local;
use crate::backend::connection::Subscriptions;
use crate::background::Backoff;

/// How often the feed's connection is asked whether it is alive.
const HEARTBEAT: Duration = Duration::from_millis(50);

/// How long its answer may take before the feed counts as silent. With
/// [`HEARTBEAT`], a server that stops answering (frozen, or a network that
/// drops everything) is found within 250 ms, and the tier is flushed and
/// bypassed from then until it answers again.
const SILENT: Duration = Duration::from_millis(200);

/// How often a cluster's masters are read again, to follow failovers.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(1);

/// The feed connection's name, for `CLIENT LIST`.
const NAME: &str = "cache-invalidations";

/// Keeps the local tier's feed for as long as the tier lives, reconnecting
/// with backoff, trying each of `nodes` in turn.
pub(crate) fn subscribe(local: Weak<Local>, nodes: Subscriptions, prefix: String) {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut attempt = 0usize;
        let mut said = None;
        loop {
            if local.strong_count() == 0 {
                return;
            }
            let client = nodes.client(attempt);
            attempt += 1;
            let (pushed, pushes) = tokio::sync::mpsc::unbounded_channel();
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_push_sender(pushed);
            let opened = async {
                let client = client.await?;
                let mut conn = open(&client, &config).await?;
                // On a cluster, every master's keys are tracked on a
                // connection of their own, all pushing to one receiver.
                let masters = match &nodes {
                    Subscriptions::Nodes(_) => Some(master_addresses(&mut conn).await?),
                    _ => None,
                };
                let mut tracked = Vec::new();
                for address in masters.iter().flatten() {
                    tracked.push(open(&client_at(&client, address)?, &config).await?);
                }
                if masters.is_none() {
                    tracked.push(conn.clone());
                }
                track(&mut tracked, &prefix).await?;
                Ok::<_, RedisError>((tracked, masters.map(|m| (conn, m))))
            };
            match opened.await {
                Ok((conns, cluster)) => {
                    let Some(tier) = local.upgrade() else { return };
                    tier.opened();
                    drop(tier);
                    backoff.reset();
                    said = None;
                    tokio::select! {
                        () = listen(&local, pushes, &prefix) => {}
                        () = heartbeat(&local, conns) => {}
                        () = moved(cluster) => {}
                    }
                    let Some(tier) = local.upgrade() else { return };
                    tier.closed(None);
                    tracing::warn!("cache invalidation feed dropped or moved: local tier flushed and bypassed until it is back");
                }
                Err(error) => match Refused::by(&error) {
                    // The tier cannot hear every writer, so it stays off,
                    // and says why once; asked again in case that changes.
                    Some(refused) => {
                        let Some(tier) = local.upgrade() else { return };
                        tier.closed(Some(refused));
                        if said.replace(refused) != Some(refused) {
                            tracing::warn!(%error, "cache: {}", refused.problem());
                        }
                        drop(tier);
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    None => {
                        tracing::debug!(%error, "cache invalidation feed failed; retrying");
                        tokio::time::sleep(backoff.pause()).await;
                    }
                },
            }
        }
    });
}

/// Why a server refuses the feed, which keeps the tier off.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Refused {
    /// The server has no client tracking (RESP3 and `CLIENT TRACKING` came
    /// with Redis 6).
    Unsupported,
    /// The user may not turn it on.
    Permission,
}

impl Refused {
    fn by(error: &RedisError) -> Option<Refused> {
        let unknown = || {
            let text = error.to_string().to_ascii_lowercase();
            text.contains("unknown command") || text.contains("unknown subcommand")
        };
        match error.code() {
            Some("NOPERM") => Some(Refused::Permission),
            Some("NOPROTO") => Some(Refused::Unsupported),
            _ if unknown() => Some(Refused::Unsupported),
            _ => None,
        }
    }

    /// What `health()` says of it.
    pub(super) fn problem(self) -> &'static str {
        match self {
            Refused::Unsupported => {
                "the local tier is off: the server has no client tracking (Redis 6 brought it), \
                 so the tier could not hear other clients' writes; every read goes to the server"
            }
            Refused::Permission => {
                "the local tier is off: the Redis user may not turn on client tracking of the \
                 cache's keys; grant it with `ACL SETUSER <user> +client|tracking`"
            }
        }
    }
}

/// A feed connection to `client`'s server, named.
async fn open(
    client: &redis::Client,
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, RedisError> {
    let mut conn = client
        .get_multiplexed_async_connection_with_config(config)
        .await?;
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(NAME)
        .query_async(&mut conn)
        .await?;
    Ok(conn)
}

/// Turns on client tracking of the prefix on each connection.
async fn track(conns: &mut [MultiplexedConnection], prefix: &str) -> Result<(), RedisError> {
    for conn in conns {
        let _: () = redis::cmd("CLIENT")
            .arg(&["TRACKING", "ON", "BCAST", "PREFIX"][..])
            .arg(format!("{prefix}:"))
            .query_async(conn)
            .await?;
    }
    Ok(())
}

/// A client like `seed` (its credentials and TLS) at a cluster node's
/// address.
fn client_at(
    seed: &redis::Client,
    (host, port): &(String, u16),
) -> Result<redis::Client, RedisError> {
    let mut addr = seed.get_connection_info().addr().clone();
    match &mut addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            h.clone_from(host);
            *p = *port;
        }
        _ => return Err(unexpected("a cluster node's address is not TCP")),
    }
    redis::Client::open(seed.get_connection_info().clone().set_addr(addr))
}

/// The addresses of the masters that serve slots, sorted; an error while
/// some slot has no live master (a failover under way): the tier then
/// stays bypassed, since no feed could hear that slot's next master.
async fn master_addresses(
    conn: &mut MultiplexedConnection,
) -> Result<Vec<(String, u16)>, RedisError> {
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await?;
    let mut masters = Vec::new();
    let mut served = 0;
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let serving =
            fields.len() > 8 && fields[2].contains("master") && !fields[2].contains("fail");
        if !serving {
            continue;
        }
        served += fields[8..].iter().map(|range| slots(range)).sum::<u32>();
        let address = fields[1].split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(unexpected("a cluster node without an address"));
        };
        let port = port
            .parse()
            .map_err(|_| unexpected("a cluster node's port is not a number"))?;
        masters.push((host.to_owned(), port));
    }
    if served != 16_384 {
        return Err(unexpected(
            "some of the cluster's slots have no live master",
        ));
    }
    masters.sort();
    Ok(masters)
}

/// How many slots a `CLUSTER NODES` slot field gives (`5`, `0-5460`; none
/// for a slot being imported or migrated, `[...]`).
fn slots(range: &str) -> u32 {
    let bound = |text: &str| text.parse::<u32>().ok();
    match range.split_once('-') {
        _ if range.starts_with('[') => 0,
        Some((first, last)) => match (bound(first), bound(last)) {
            (Some(first), Some(last)) if last >= first => last - first + 1,
            _ => 0,
        },
        None => u32::from(bound(range).is_some()),
    }
}

/// On a cluster, returns when the masters serving slots are no longer the
/// ones the feed was made on (a failover, a node added or removed): the
/// feed is then made again, on the new masters. Elsewhere, never.
async fn moved(cluster: Option<(MultiplexedConnection, Vec<(String, u16)>)>) {
    let Some((mut conn, tracked)) = cluster else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(TOPOLOGY_EVERY).await;
        match master_addresses(&mut conn).await {
            Ok(now) if now == tracked => {}
            _ => return,
        }
    }
}

fn unexpected(what: &'static str) -> RedisError {
    crate::error::unexpected_reply(what)
}

/// Applies what the feed pushes, until its connection drops.
async fn listen(local: &Weak<Local>, mut pushes: UnboundedReceiver<PushInfo>, prefix: &str) {
    while let Some(push) = pushes.recv().await {
        let Some(tier) = local.upgrade() else { return };
        match push.kind {
            PushKind::Invalidate => tier.invalidate_keys(&push.data, prefix),
            PushKind::Disconnection => return,
            _ => {}
        }
    }
}

/// Asks the feed's connections every [`HEARTBEAT`] whether they are alive:
/// the tier is bypassed while one does not answer within [`SILENT`];
/// returns when one breaks.
async fn heartbeat(local: &Weak<Local>, conns: Vec<MultiplexedConnection>) {
    let ping = redis::cmd("PING");
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let pings = conns.iter().map(|conn| {
            let (mut conn, ping) = (conn.clone(), &ping);
            async move {
                tokio::time::timeout(SILENT, ping.query_async::<redis::Value>(&mut conn)).await
            }
        });
        let answers = futures_util::future::join_all(pings).await;
        let Some(tier) = local.upgrade() else { return };
        if answers.iter().any(|answer| matches!(answer, Ok(Err(_)))) {
            return;
        }
        match answers.iter().all(Result::is_ok) {
            true => tier.heard(),
            false => tier.silent(),
        }
    }
}
