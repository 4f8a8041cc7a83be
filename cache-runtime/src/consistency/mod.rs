//! What a process keeps in memory so that its reads stay consistent with
//! its writes: the loads in [flight](flight) per key (one load, the others
//! follow it, and a write detaches it so later callers load afresh), and
//! the evictions that failed and are [pending](pending) retry (read past
//! until then). The [`Cache`](crate::Cache) holds this state; the flows act
//! on it.

pub(crate) mod flight;
pub(crate) mod pending;
