//! The local tier's feed: what keeps its copies from outliving a change to
//! the entries they copy.
//!
//! On one server (or the master Sentinel names), the feed is Redis client
//! tracking, broadcast on the cache's prefix (`CLIENT TRACKING ON BCAST
//! PREFIX`), on a RESP3 connection of its own: Redis pushes the name of
//! every key under the prefix that any client changes, deletes, or that the
//! server expires or evicts, and a null for `FLUSHALL`/`FLUSHDB`. On a
//! cluster (tracking would need a connection to every master), or where
//! tracking is refused, the feed is the channel every write of this library
//! announces itself on. While the feed is down, or open but silent, the
//! tier is flushed and bypassed.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, RedisError};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Local;
use crate::backend::connection::Subscriptions;

/// How often the feed's connection is asked whether it is alive.
const HEARTBEAT: Duration = Duration::from_millis(50);

/// How long its answer may take before the feed counts as silent. With
/// [`HEARTBEAT`], a server that stops answering (frozen, or a network that
/// drops everything) is found within 250 ms, and the tier is flushed and
/// bypassed from then until it answers again.
const SILENT: Duration = Duration::from_millis(200);

/// The feed connection's name, for `CLIENT LIST`.
const NAME: &str = "cache-invalidations";

/// What a feed connection carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Feed {
    /// Client tracking: every change of a key under the prefix.
    Tracking,
    /// The channel: this library's writes only.
    Channel,
}

/// Keeps the local tier's feed for as long as the tier lives, reconnecting
/// with backoff, trying each of `nodes` in turn.
pub(crate) fn subscribe(local: Weak<Local>, nodes: Subscriptions, channel: String, prefix: String) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0usize;
        let mut refused = false;
        let mut untracked = false;
        loop {
            if local.strong_count() == 0 {
                return;
            }
            let client = nodes.client(attempt);
            attempt += 1;
            let (pushed, pushes) = tokio::sync::mpsc::unbounded_channel();
            let opened = async {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_push_sender(pushed);
                let mut conn = client
                    .await?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let _: () = redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(NAME)
                    .query_async(&mut conn)
                    .await?;
                if nodes.one_server() {
                    let tracked: Result<(), RedisError> = redis::cmd("CLIENT")
                        .arg(&["TRACKING", "ON", "BCAST", "PREFIX"][..])
                        .arg(format!("{prefix}:"))
                        .query_async(&mut conn)
                        .await;
                    match tracked {
                        Ok(()) => return Ok((conn, Feed::Tracking)),
                        Err(error) if !untracked => {
                            untracked = true;
                            tracing::warn!(
                                %error,
                                "cache: the server refuses client tracking, so the local tier hears \
                                 only this library's writes (on its channel); other clients' changes \
                                 reach a copy when it expires"
                            );
                        }
                        Err(_) => {}
                    }
                }
                conn.subscribe(&channel).await?;
                Ok::<_, RedisError>((conn, Feed::Channel))
            };
            match opened.await {
                Ok((conn, feed)) => {
                    let Some(tier) = local.upgrade() else { return };
                    tier.flush(); // what was missed while down
                    tier.tracking
                        .store(feed == Feed::Tracking, Ordering::Release);
                    tier.live.store(true, Ordering::Release);
                    drop(tier);
                    delay = Duration::from_millis(50);
                    tokio::select! {
                        () = listen(&local, pushes, &prefix) => {}
                        () = heartbeat(&local, conn) => {}
                    }
                    let Some(tier) = local.upgrade() else { return };
                    tier.live.store(false, Ordering::Release);
                    tier.tracking.store(false, Ordering::Release);
                    tier.flush();
                    tracing::warn!("cache invalidation feed dropped: local tier flushed and bypassed until it is back");
                }
                Err(error) if error.code() == Some("NOPERM") => {
                    // An ACL user without channel rights, where tracking is
                    // refused too: the tier stays off (it cannot hear
                    // invalidations), and says so once.
                    if !refused {
                        refused = true;
                        tracing::warn!(
                            %channel,
                            %error,
                            "the local tier is off: this Redis user may not subscribe to the cache's \
                             invalidation channel; grant it with `ACL SETUSER <user> &{channel}`"
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(error) => {
                    tracing::debug!(%error, "cache invalidation feed failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    });
}

/// Applies what the feed pushes, until its connection drops.
async fn listen(local: &Weak<Local>, mut pushes: UnboundedReceiver<PushInfo>, prefix: &str) {
    while let Some(push) = pushes.recv().await {
        let Some(tier) = local.upgrade() else { return };
        match push.kind {
            PushKind::Invalidate => tier.invalidate_keys(&push.data, prefix),
            PushKind::Message => match push.data.get(1) {
                Some(redis::Value::BulkString(payload)) => tier.invalidate_message(payload),
                _ => tier.flush(),
            },
            PushKind::Disconnection => return,
            _ => {}
        }
    }
}

/// Asks the feed's connection every [`HEARTBEAT`] whether it is alive: the
/// tier is bypassed while it does not answer within [`SILENT`]; returns
/// when the connection breaks.
async fn heartbeat(local: &Weak<Local>, mut conn: MultiplexedConnection) {
    let ping = redis::cmd("PING");
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let answer =
            tokio::time::timeout(SILENT, ping.query_async::<redis::Value>(&mut conn)).await;
        let Some(tier) = local.upgrade() else { return };
        match answer {
            Ok(Ok(_)) => tier.heard(),
            Ok(Err(_)) => return,
            Err(_) => tier.silent(),
        }
    }
}
