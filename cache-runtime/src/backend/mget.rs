//! A group's generation and some of its entries, in one `MGET`, and what
//! each entry means under that generation: the plain read behind every hit,
//! batched or alone.

use redis::{RedisError, Value};

use super::connection::Connection;
use super::epochs::Judged;
use super::Lookup;
use crate::entry::shared::Kept;
use crate::error::unexpected_reply;

/// An entry as a peek reads it: its generation followed by its envelope.
/// (A peek does not read the lease: a miss is told from a held miss by the
/// lookup script that follows it.)
pub(crate) type Stored = Option<Vec<u8>>;

/// Reads a group's generation and some of its entries, in one `MGET` (a key
/// of another type reads as nil: a miss, which the lookup script repairs).
/// A generation that the server holding it did not make (it restarted, or
/// failed over, since) reads as absent: every entry is then a miss. The
/// entries are taken from the reply as they are asked for: a lone read
/// builds no second list.
pub(crate) async fn read(
    conn: &Connection,
    gen: &str,
    entries: &[&str],
) -> Result<(Stored, impl Iterator<Item = Result<Stored, RedisError>>), RedisError> {
    let sent_on = conn.number();
    // Sized up front: growing the command's buffers cost a lone read more
    // than writing its arguments.
    let size = "MGET".len() + gen.len() + entries.iter().map(|e| e.len()).sum::<usize>();
    let mut mget = redis::Cmd::with_capacity(2 + entries.len(), size);
    mget.arg("MGET").arg(gen);
    for entry in entries {
        mget.arg(*entry);
    }
    let reply: Value = mget.query_async(&mut conn.clone()).await?;
    let Value::Array(replies) = reply else {
        return Err(unexpected_reply(
            "a batched read got a reply that is not a list",
        ));
    };
    let mut replies = replies.into_iter().map(stored);
    let mut stored_gen = replies.next().ok_or_else(short_reply)??;
    if let Some(made) = &stored_gen {
        let admitted = match conn.epochs().judge(conn, made, sent_on) {
            Judged::Admitted => true,
            Judged::Refused => false,
            // Boxed: every read's future would otherwise hold the ask's.
            Judged::Ask(on) => Box::pin(conn.epochs().confirm(conn, gen, made, on)).await,
        };
        if !admitted {
            stored_gen = None;
        }
    }
    Ok((stored_gen, replies))
}

/// One value of an `MGET` reply.
pub(super) fn stored(value: Value) -> Result<Stored, RedisError> {
    match value {
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::Nil => Ok(None),
        Value::ServerError(error) => Err(error.into()),
        _ => Err(unexpected_reply(
            "a batched read got a value that is not a string",
        )),
    }
}

/// What an entry means under its group's generation: a hit when it starts
/// with it.
pub(super) fn verdict(gen: Option<&[u8]>, stored: Stored) -> Lookup {
    match (gen, stored) {
        (Some(gen), Some(stored)) if stored.starts_with(gen) => {
            Lookup::Hit(Kept::after(stored, gen.len()))
        }
        _ => Lookup::Miss(None),
    }
}

/// A read answered with fewer values than it asked for.
pub(super) fn short_reply() -> RedisError {
    unexpected_reply("a batched read got fewer values than it asked for")
}
