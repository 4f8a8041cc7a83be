//! One `redis-server` (or the binary `CACHE_TEST_SERVER` names) for a test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, server_binary};
use cache_runtime::Cache;

/// The server's command on loopback `port`, persistence off (a test that
/// wants a snapshot asks for it with `SAVE`).
pub(super) fn server_on(port: u16) -> Command {
    let mut command = Command::new(server_binary());
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    command.args(["--save", "", "--appendonly", "no"]);
    command
}

/// A `redis-server` started for one test and stopped when dropped. Tests can
/// kill it, pause it (`SIGSTOP`), and start it again on the same port.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server with persistence off; panics with a clear message when
    /// `redis-server` is missing or does not answer within 10 s.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra configuration (`["--maxmemory", "2mb"]`).
    pub fn start_with(args: &[&str]) -> Self {
        for _attempt in 0..5 {
            let mut server = Self::reserve_with(args);
            if server.spawn() {
                return server;
            }
            // Most likely another process took the port between our probe and
            // the server's bind: try another one.
        }
        panic!("redis-server did not start on a free loopback port after 5 attempts");
    }

    /// A free port with no server on it yet: [`restart`](Self::restart) starts it.
    pub fn reserve() -> Self {
        Self::reserve_with(&[])
    }

    fn reserve_with(args: &[&str]) -> Self {
        RedisServer {
            child: None,
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn spawn(&mut self) -> bool {
        let child = server_on(self.port)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed: run the README's test command, which installs it",
            );
        self.child = Some(child);
        if self.wait_ready(Duration::from_secs(10)) {
            return true;
        }
        self.kill();
        false
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)),
    /// empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        for _attempt in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100)); // the port may linger briefly
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Kills the server (`SIGKILL`) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill(1) is available");
        assert!(status.success(), "kill {signal} failed");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(None)) => {}
                _ => return false,
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A cache on this server.
    pub async fn cache(&self) -> Cache {
        Cache::builder()
            .redis(self.url())
            .op_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("cache on the test server")
    }

    /// Fills the server, then sets its limit below what it holds: started
    /// with `--maxmemory-policy noeviction`, it stays over the limit and
    /// refuses every write that would add memory. Returns a connection.
    pub async fn make_full(&self) -> redis::aio::MultiplexedConnection {
        let mut conn = self.client().await;
        for i in 0..64 {
            let _: () = redis::cmd("SET")
                .arg(format!("junk:{i}"))
                .arg(vec![b'x'; 16 * 1024])
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap();
        let used: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(used - 256 * 1024)
            .query_async(&mut conn)
            .await
            .unwrap();
        let refused: redis::RedisResult<()> = redis::cmd("SET")
            .arg("one-more")
            .arg("x")
            .query_async(&mut conn)
            .await;
        assert!(refused.is_err(), "Redis refuses writes once full");
        conn
    }

    /// A plain redis-rs connection, for inspecting the server.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connection to the test server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // a paused server would not die of SIGKILL until resumed on some systems
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A scratch directory for a server's files, removed when dropped.
pub struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cache-{what}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }

    pub fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
