//! What a cache found its server lets it do: on first contact, and from
//! what it refused since.

use crate::backend::redis::Rights;
use crate::observe::Refusal;

/// What a cache's server lets it do, checked on first contact
/// ([`Cache::health`](crate::Cache::health)): its role, the user's script
/// rights, and whether a local tier hears every writer. A server that cannot take the cache's writes (a
/// read-only replica, a user without script rights) is never read from: what
/// the cache cannot invalidate, it does not serve.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let health = cache_runtime::Cache::in_memory().health().await;
/// assert!(health.serving && health.problems.is_empty());
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the server answered, now.
    pub reachable: bool,
    /// Whether the cache serves and stores now; when not (the server is
    /// unreachable, or refuses what the cache needs), every call runs its
    /// body and nothing is cached.
    pub serving: bool,
    /// Whether the cache works less than fully: it serves nothing, a right
    /// it needs is missing, or the server refused some of its operations
    /// within the last ten seconds (full, read-only, a right missing).
    /// `problems` says why.
    pub degraded: bool,
    /// What the cache cannot do, and how to fix it.
    pub problems: Vec<String>,
}

impl Health {
    /// The verdict on what a server allows (`None`: nothing to ask).
    pub(crate) fn of(rights: Option<Rights>) -> Health {
        let mut health = Health {
            reachable: true,
            serving: true,
            degraded: false,
            problems: Vec::new(),
        };
        let Some(rights) = rights else {
            return health;
        };
        if rights.replica {
            health.serving = false;
            health.problems.push(
                "the URL points at a read-only replica: the cache cannot write there, so it serves \
                 nothing; point it at the master"
                    .to_owned(),
            );
        }
        if !rights.scripts {
            health.serving = false;
            health.problems.push(
                "the Redis user may not run scripts: every cache write is one, so the cache serves \
                 nothing; grant it with `ACL SETUSER <user> +@scripting`"
                    .to_owned(),
            );
        }
        health.degraded = !health.problems.is_empty();
        health
    }

    /// Adds what the server refused lately.
    pub(crate) fn with(mut self, refused: impl IntoIterator<Item = Refusal>) -> Health {
        for refusal in refused {
            self.problems.push(refusal.problem().to_owned());
        }
        self.degraded = !self.problems.is_empty();
        self
    }
}
