//! What the flows ask of dependencies: pin a read's record before the read
//! ([`Cache::pin_reads`]), check a stamped hit ([`Cache::stamps_hold`]), and
//! at the end of a load pin what it named and seal its stamps
//! ([`Cache::finish_load`]).

use std::time::Duration;

use super::capture::Capture;
use super::{stamps, Dep, Record, Stamp};
use crate::backend::redis::micros;
use crate::entry::EntryKey;
use crate::observe::Warning;
use crate::Cache;

/// How much the server's clock may run ahead of this process's over a
/// load, besides a thousandth of the load's time: an explicit dependency
/// written this close to the load's start counts as written during it.
const CLOCK_SLACK: Duration = Duration::from_millis(1);

impl Cache {
    /// Inside a load, before reading keys of `group`: pins their records
    /// (one script) and notes their tokens, so that a write the read misses
    /// changes a token noted before it. A pin that fails leaves the load
    /// unstored.
    pub(crate) async fn pin_reads(&self, capture: &Capture, group: &str, keys: &[EntryKey]) {
        let records: Vec<Record> = keys.iter().cloned().map(Record::Key).collect();
        let ttl = self.record_ttl(capture);
        match self.op(self.backend().pin(group, &records, ttl)).await {
            Ok(pinned) => {
                let stamps: Vec<Stamp> = records
                    .into_iter()
                    .zip(&pinned.records)
                    .map(|(record, token)| Stamp {
                        group: group.to_owned(),
                        token: key_token(&pinned.gen, token),
                        record,
                    })
                    .collect();
                capture.note(&stamps);
            }
            Err(error) => {
                tracing::debug!(group, %error, "could not pin a dependency; the load will not be stored");
                capture.poison();
            }
        }
    }

    /// Records outlive the entries stamped with them by a load's worth.
    fn record_ttl(&self, capture: &Capture) -> Duration {
        capture.ttl + self.settings().lease_ttl
    }

    /// Whether each stamp of a stamped envelope still holds (one plain read
    /// per group); the stamps of a hit that holds are noted in the load in
    /// progress, if any. A record that is gone, one the read must pass by
    /// (`passed`: an eviction pending retry in this process), or a failed
    /// read, fails the check.
    pub(crate) async fn stamps_hold(
        &self,
        envelope: &[u8],
        capture: Option<&Capture>,
        passed: impl Fn(&str, &Record) -> bool,
    ) -> bool {
        let Some(stamps) = stamps::read(envelope) else {
            return false;
        };
        if stamps
            .iter()
            .any(|stamp| passed(&stamp.group, &stamp.record))
        {
            return false;
        }
        let groups = by_group(stamps.iter().map(|stamp| (stamp.group.as_str(), stamp)));
        let checks = groups.iter().map(|(group, stamps)| async move {
            let records: Vec<Record> = stamps.iter().map(|s| s.record.clone()).collect();
            let Ok((gen, tokens)) = self.op(self.backend().check(group, &records)).await else {
                return false;
            };
            stamps
                .iter()
                .zip(tokens)
                .all(|(stamp, token)| match (&stamp.record, token) {
                    (_, None) => false,
                    (Record::Key(_), Some(token)) => gen
                        .as_deref()
                        .is_some_and(|gen| stamp.token == key_token(gen, &token)),
                    (Record::Group, Some(token)) => stamp.token == token,
                })
        });
        let held = futures_util::future::join_all(checks)
            .await
            .into_iter()
            .all(|held| held);
        if let (true, Some(capture)) = (held, capture) {
            capture.note(&stamps);
        }
        held
    }

    /// Ends a load: pins the dependencies it named (by [`depend`](super::depend)
    /// or in `declared`, from `depends_on`), and returns the stamps to store
    /// with its value, or `None` when the value must not be stored: a
    /// dependency could not be pinned or was written during the load, or
    /// there are more than the configured limit.
    pub(crate) async fn finish_load(
        &self,
        group: &str,
        capture: &Capture,
        declared: Vec<Dep>,
    ) -> Option<Vec<Stamp>> {
        let mut named = capture.take_explicit();
        named.extend(declared);
        if !named.is_empty() {
            self.pin_named(capture, named).await;
        }
        let noted = capture.take();
        if noted.poisoned {
            return None;
        }
        let limit = self.settings().max_dependencies;
        if noted.stamps.len() > limit {
            self.counters().warn_limited(Warning::Failure, |count| {
                tracing::warn!(
                    group,
                    dependencies = noted.stamps.len(),
                    limit,
                    count,
                    "cache value depends on more entries than max_dependencies; not stored"
                );
            });
            return None;
        }
        Some(noted.stamps)
    }

    /// Pins named dependencies, one script per group, after the body read
    /// what they name: each counts only if its record (and, for a key, its
    /// group's eviction) was last written before the load began, by the
    /// clock that stamped it. Else the value may predate the write, and the
    /// load is not stored.
    async fn pin_named(&self, capture: &Capture, named: Vec<Dep>) {
        let mut records = Vec::with_capacity(named.len());
        for dep in named {
            match dep.record {
                Ok(record) => records.push((dep.group, record)),
                Err(_) => {
                    tracing::warn!(
                        group = dep.group,
                        "a dependency's key does not encode; the value is not stored"
                    );
                    capture.poison();
                }
            }
        }
        let groups = by_group(records);
        let ttl = self.record_ttl(capture);
        let pins = groups.iter().map(|(group, records)| async move {
            let pinned = self.op(self.backend().pin(group, records, ttl)).await;
            (group, records, pinned)
        });
        for (group, records, pinned) in futures_util::future::join_all(pins).await {
            let elapsed = capture.started.elapsed();
            let window = u64::try_from((elapsed + elapsed / 1000 + CLOCK_SLACK).as_micros())
                .unwrap_or(u64::MAX);
            let Ok(pinned) = pinned else {
                capture.poison();
                continue;
            };
            let mut stamps = Vec::with_capacity(records.len());
            for (record, token) in records.iter().zip(&pinned.records) {
                let written = match record {
                    Record::Key(_) => micros(token).max(pinned.evicted_us),
                    Record::Group => micros(token),
                };
                if pinned.now_us.saturating_sub(written) <= window {
                    tracing::debug!(
                        group,
                        "a dependency was written during the load; the value is not stored"
                    );
                    capture.poison();
                }
                let token = match record {
                    Record::Key(_) => key_token(&pinned.gen, token),
                    Record::Group => token.clone(),
                };
                stamps.push(Stamp {
                    group: group.clone(),
                    record: record.clone(),
                    token,
                });
            }
            capture.note(&stamps);
        }
    }
}

/// Items by their group, in the order first seen, each once: one backend
/// operation serves a group (its slot).
fn by_group<G: PartialEq, T: PartialEq>(
    items: impl IntoIterator<Item = (G, T)>,
) -> Vec<(G, Vec<T>)> {
    let mut groups: Vec<(G, Vec<T>)> = Vec::new();
    for (group, item) in items {
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, of_group)) if !of_group.contains(&item) => of_group.push(item),
            Some(_) => {}
            None => groups.push((group, vec![item])),
        }
    }
    groups
}

/// The token a key's stamp holds: its group's generation and its record's.
fn key_token(gen: &str, record: &str) -> String {
    format!("{gen}/{record}")
}
