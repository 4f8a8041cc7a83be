//! What the server lets the cache do, asked on first contact: its role, and
//! the user's right to run scripts.

use redis::{FromRedisValue, Value};

use super::Redis;
use crate::backend::connection::Connection;
use crate::error::Error;

/// What a server lets the cache do, found on first contact.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rights {
    /// A read-only replica: the cache could not write, so it must not read.
    pub(crate) replica: bool,
    /// Whether the user may run scripts (`EVALSHA`): every write is one.
    pub(crate) scripts: bool,
}

impl Redis {
    /// Asks the server what it lets this user do. In a cluster, every
    /// command that names a key goes to a master, so only the rights are
    /// asked (of the node that serves the probe's key, or any node).
    pub(crate) async fn rights(&self) -> Result<Rights, Error> {
        let mut conn = self.conn.clone();
        let replica = match &self.conn {
            Connection::Cluster(_) => false,
            _ => {
                let role: Result<Vec<Value>, redis::RedisError> =
                    redis::cmd("ROLE").query_async(&mut conn).await;
                match role {
                    Ok(role) => role
                        .first()
                        .and_then(|first| String::from_redis_value(first.clone()).ok())
                        .is_some_and(|role| role == "slave" || role == "replica"),
                    Err(error) if error.code() == Some("NOPERM") => false,
                    Err(error) => return Err(error.into()),
                }
            }
        };
        // A script that does not exist: NOSCRIPT when scripts are allowed.
        let probe: Result<Value, redis::RedisError> = redis::cmd("EVALSHA")
            .arg("ffffffffffffffffffffffffffffffffffffffff")
            .arg(1)
            .arg(&self.prefix)
            .query_async(&mut conn)
            .await;
        let scripts = !matches!(&probe, Err(error) if error.code() == Some("NOPERM"));
        Ok(Rights { replica, scripts })
    }
}
