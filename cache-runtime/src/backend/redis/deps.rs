//! Dependency records: a load's pins, and the check of what it read.

use std::time::Duration;

use super::scripts::PIN;
use super::{micros, millis, Redis};
use crate::backend::names::{group_gen, group_key, EVICTED, GROUP_RECORD};
use crate::backend::{token, Pinned};
use crate::entry::Record;
use crate::error::unexpected_reply;
use crate::error::Error;

impl Redis {
    /// The name of a dependency record of `group`.
    fn record_name(&self, group: &str, record: &Record) -> String {
        match record {
            Record::Key(key) => self.names(group, key).record(),
            Record::Group => group_key(&self.prefix, group, GROUP_RECORD),
        }
    }

    /// Pins dependency records of one group (one script, in the group's
    /// slot): see [`Pinned`].
    pub(crate) async fn pin(
        &self,
        group: &str,
        records: &[Record],
        ttl: Duration,
    ) -> Result<Pinned, Error> {
        let mut script = PIN.key(group_gen(&self.prefix, group));
        script
            .key(group_key(&self.prefix, group, EVICTED))
            .key(group_key(&self.prefix, group, GROUP_RECORD))
            .arg(millis(ttl))
            .arg(self.fresh_gen());
        for record in records {
            script.key(self.record_name(group, record)).arg(token());
        }
        let typed = || {
            let keys = records.iter().filter_map(|record| match record {
                Record::Key(key) => Some(key),
                Record::Group => None,
            });
            self.typed_many(group, keys)
        };
        let reply: Vec<String> = self.run(typed, &script).await?;
        let mut reply = reply.into_iter();
        match (reply.next(), reply.next(), reply.next()) {
            (Some(now), Some(gen), Some(evicted)) if reply.len() == records.len() => Ok(Pinned {
                now_us: micros(&now),
                gen,
                evicted_us: micros(&evicted),
                records: reply.collect(),
            }),
            _ => Err(unexpected_reply("unexpected reply from the cache pin script").into()),
        }
    }

    /// The group's generation and the tokens of dependency records of it,
    /// in one plain `MGET` (all in the group's slot).
    pub(crate) async fn check(
        &self,
        group: &str,
        records: &[Record],
    ) -> Result<(Option<String>, Vec<Option<String>>), Error> {
        let names = records.iter().map(|record| self.record_name(group, record));
        self.with_gen(group, names).await
    }
}
