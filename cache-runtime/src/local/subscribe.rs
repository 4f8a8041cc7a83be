//! The local tier's subscription to the invalidation channel: what keeps
//! its copies from outliving the writes other processes make.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;

use super::Local;
use crate::backend::connection::Subscriptions;

/// Subscribes to the invalidation channel for as long as the local tier
/// lives, reconnecting with backoff, trying each of `nodes` in turn (in a
/// cluster, messages reach every node); while unsubscribed the tier is
/// flushed and bypassed.
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
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(tier) = local.upgrade() else { return };
                        tier.invalidate_message(message.get_payload_bytes());
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
