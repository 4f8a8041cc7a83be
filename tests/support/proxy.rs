//! A user-space proxy between the cache and Redis that delays, or drops, what it forwards.

use super::free_port;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port nothing listens on now.
pub fn unused_port() -> u16 {
    free_port()
}

/// A TCP proxy on a free loopback port in front of `127.0.0.1:target`, which
/// can hold the server's replies (requests still pass): a test can keep a
/// read on the wire, answered by the server but not yet by the proxy.
pub struct Proxy {
    port: u16,
    held: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Proxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("its address").port();
        let held = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let gate = held.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                forward(client, server_out, None);
                forward(server, client_out, Some(gate.clone()));
            }
        });
        Proxy { port, held }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A proxy that delivers every byte, each way, `one_way` after it came:
    /// a network with a round trip of twice that, as the kernel's `netem`
    /// would make it, in plain threads (a tokio timer rounds up to a
    /// millisecond). Order is kept; reading is never held up by the delay.
    pub fn delayed(target: u16, one_way: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("its address").port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                forward_late(client, server_out, one_way);
                forward_late(server, client_out, one_way);
            }
        });
        let held = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        Proxy { port, held }
    }

    /// Holds every reply from now on until [`release`](Self::release).
    pub fn hold(&self) {
        *self.held.0.lock().expect("the proxy's gate") = true;
    }

    pub fn release(&self) {
        *self.held.0.lock().expect("the proxy's gate") = false;
        self.held.1.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.release();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read: one thread
/// reads and stamps, another sleeps until each stamp and writes.
fn forward_late(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (sender, receiver) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0
                || sender
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in receiver {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// Copies `from` to `to` in a thread, waiting at `gate` before each write.
fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    gate: Option<std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>>,
) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 {
                break;
            }
            if let Some(gate) = &gate {
                let (held, open) = &**gate;
                let mut guard = held.lock().expect("the proxy's gate");
                while *guard {
                    guard = open.wait(guard).expect("the proxy's gate");
                }
            }
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
