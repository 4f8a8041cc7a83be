//! The local tier's subscription to the invalidation channel: what keeps
//! its copies from outliving the writes other processes make.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;

use super::Local;
use crate::backend::connection::Subscriptions;

/// How often the subscription's connection is asked whether it is alive.
const HEARTBEAT: Duration = Duration::from_millis(50);

/// How long its answer may take before the feed counts as silent. With
/// [`HEARTBEAT`], a server that stops answering (frozen, or a network that
/// drops everything) is found within 250 ms, and the tier is flushed and
/// bypassed from then until it answers again.
const SILENT: Duration = Duration::from_millis(200);

/// Subscribes to the invalidation channel for as long as the local tier
/// lives, reconnecting with backoff, trying each of `nodes` in turn (in a
/// cluster, messages reach every node); while unsubscribed, or while the
/// connection is open but silent, the tier is flushed and bypassed.
pub(crate) fn subscribe(local: Weak<Local>, nodes: Subscriptions, channel: String) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0usize;
        let mut refused = false;
        loop {
            if local.strong_count() == 0 {
                return;
            }
            let node = nodes.client(attempt);
            attempt += 1;
            let subscribed = async {
                let mut pubsub = node.await?.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match subscribed.await {
                Ok(pubsub) => {
                    let Some(tier) = local.upgrade() else { return };
                    tier.flush(); // what was missed while down
                    tier.live.store(true, Ordering::Release);
                    drop(tier);
                    delay = Duration::from_millis(50);
                    let (mut sink, mut messages) = pubsub.split();
                    let listen = async {
                        while let Some(message) = messages.next().await {
                            let Some(tier) = local.upgrade() else { return };
                            tier.invalidate_message(message.get_payload_bytes());
                        }
                    };
                    let heartbeat = async {
                        loop {
                            tokio::time::sleep(HEARTBEAT).await;
                            let answer =
                                tokio::time::timeout(SILENT, sink.ping::<redis::Value>()).await;
                            let Some(tier) = local.upgrade() else { return };
                            match answer {
                                Ok(Ok(_)) => tier.heard(),
                                Ok(Err(_)) => return, // the connection broke
                                Err(_) => tier.silent(),
                            }
                        }
                    };
                    tokio::select! {
                        () = listen => {}
                        () = heartbeat => {}
                    }
                    let Some(tier) = local.upgrade() else { return };
                    tier.live.store(false, Ordering::Release);
                    tier.flush();
                    tracing::warn!("cache invalidation subscription dropped: local tier flushed and bypassed until it is back");
                }
                Err(error) if error.code() == Some("NOPERM") => {
                    // An ACL user without channel rights: the tier stays off
                    // (it cannot hear invalidations), and says so once.
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
                    tracing::debug!(%error, "cache invalidation subscription failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    });
}
