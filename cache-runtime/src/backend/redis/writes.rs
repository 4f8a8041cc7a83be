//! Writes: a put's writer record and its end, an eviction, a group's
//! eviction, and the script a write-behind stores by.

use std::time::Duration;

use redis::{Script, ScriptInvocation};

use super::scripts::{BEGIN_WRITE, END_WRITE, EVICT_GROUP, REPLACE};
use super::{millis, Redis};
use crate::backend::names::{group_gen, group_key, group_typed, Names, EVICTED, GROUP_RECORD};
use crate::backend::{Ticket, WriteEnd};
use crate::entry::EntryKey;
use crate::error::Error;

impl Redis {
    pub(crate) async fn begin_write(
        &self,
        group: &str,
        key: &EntryKey,
        token: &str,
    ) -> Result<Ticket, Error> {
        let names = self.names(group, key);
        let mut script = BEGIN_WRITE.key(names.writers());
        script
            .key(names.gen())
            .arg(token)
            .arg(self.lease_ms)
            .arg(self.fresh_gen());
        let gen: String = self.run(|| names.typed(), &script).await?;
        Ok(Ticket {
            token: token.to_owned(),
            gen,
        })
    }

    pub(crate) async fn end_write(
        &self,
        group: &str,
        key: &EntryKey,
        ticket: &Ticket,
        end: WriteEnd,
    ) -> Result<bool, Error> {
        let names = self.names(group, key);
        let (mode, bytes, ttl) = match end {
            WriteEnd::Store(bytes, ttl) => ("store", bytes, millis(ttl)),
            WriteEnd::Evict => ("evict", Vec::new(), 0),
            WriteEnd::Abort => ("abort", Vec::new(), 0),
        };
        let mut script = on_key(&END_WRITE, &names);
        script
            .arg(&ticket.token)
            .arg(&ticket.gen)
            .arg(mode)
            .arg(bytes)
            .arg(ttl);
        match self.run::<i64>(|| names.typed(), &script).await {
            // The writer record stays until its TTL: later puts evict.
            Err(error) if mode != "abort" && self.full(&error) => {
                self.delete_entry(&names).await.map(|_| false)
            }
            other => Ok(other? == 1),
        }
    }

    pub(crate) async fn invalidate(&self, group: &str, key: &EntryKey) -> Result<bool, Error> {
        let names = self.names(group, key);
        let script = on_key(&REPLACE, &names);
        match self.run::<i64>(|| names.typed(), &script).await {
            Err(error) if self.full(&error) => self.delete_entry(&names).await,
            other => Ok(other? == 1),
        }
    }

    /// The script that stores a value whatever is there (a write-behind's,
    /// which adds its log's keys and arguments to it).
    pub(crate) fn storing(
        &self,
        names: &Names,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> ScriptInvocation<'static> {
        let mut script = on_key(&REPLACE, names);
        script.arg(bytes).arg(millis(ttl)).arg(self.fresh_gen());
        script
    }

    pub(crate) async fn evict_group(&self, group: &str) -> Result<(), Error> {
        let gen = group_gen(&self.prefix, group);
        let evicted = group_key(&self.prefix, group, EVICTED);
        let record = group_key(&self.prefix, group, GROUP_RECORD);
        let mut script = EVICT_GROUP.key(&gen);
        script.key(&evicted).key(&record).arg(self.fresh_gen());
        let base = group_key(&self.prefix, group, "");
        let set: Result<i64, Error> = self.run(|| group_typed(&base), &script).await;
        match set {
            // Without its generation key every entry of the group is a miss;
            // the next write starts a new generation. Without the other two,
            // every dependency on the group fails its check, and the next
            // pin reads the group as evicted now.
            Err(error) if self.full(&error) => {
                for key in [&gen, &evicted, &record] {
                    self.delete(key).await?;
                }
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

/// A write script invoked on the keys a write of one entry touches: the
/// entry, its writer record, the group's generation, the entry's lease, and
/// the entry's and the group's dependency records.
fn on_key(script: &'static Script, names: &Names) -> ScriptInvocation<'static> {
    let mut invocation = script.key(names.entry());
    invocation
        .key(names.writers())
        .key(names.gen())
        .key(names.lease())
        .key(names.record())
        .key(names.group_record());
    invocation
}
