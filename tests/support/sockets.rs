//! The options of this process's own sockets, for the tests that check the
//! cache's connections: kept apart from the shared support so that the
//! benches that share it need no socket crate.

/// Checks that this process has at least `at_least` TCP connections to
/// `ports` on loopback (`what` they are), and that each sets `TCP_NODELAY`.
pub fn assert_nodelay(ports: &[u16], at_least: usize, what: &str) {
    let sockets = nodelay_of_connections_to(ports);
    assert!(sockets.len() >= at_least, "{what}: {sockets:?}");
    assert!(
        sockets.iter().all(|&nodelay| nodelay),
        "{what}: each sets TCP_NODELAY: {sockets:?}"
    );
}

/// Whether each of this process's TCP connections to one of `ports` on
/// loopback has `TCP_NODELAY` set, read from `/proc/self/fd` (Linux).
fn nodelay_of_connections_to(ports: &[u16]) -> Vec<bool> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("this process's descriptors") {
        let Ok(entry) = entry else { continue };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: only read through, while the test holds the cache that
        // owns the descriptor open; one closed meanwhile fails the calls.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_port = socket
            .peer_addr()
            .ok()
            .and_then(|peer| peer.as_socket())
            .is_some_and(|peer| peer.ip().is_loopback() && ports.contains(&peer.port()));
        if to_port {
            if let Ok(nodelay) = socket.tcp_nodelay() {
                found.push(nodelay);
            }
        }
    }
    found
}
