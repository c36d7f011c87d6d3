//! Loopback ports for the real programs the tests start (redis-server, its sentinel, nginx,
//! the Lambda emulator), which take a port number instead of binding port 0 themselves.
//!
//! The kernel picks the port of each `bind(0)` at random among the ~14,000 of its parity in
//! the ephemeral range, independently of earlier picks, so the dozens of servers this binary
//! starts would now and then be given the same port twice, and a test server binding port 0
//! in between may take one too. The second server to bind it exits, and its test, waiting for
//! the port to accept connections, would go on talking to another test's server. So each port
//! is handed out at most once per test process, and reserved until its server binds it: a
//! connection to it is accepted and closed from the listening side, which leaves the port in
//! TIME_WAIT for a minute. `bind(0)` never picks a port in TIME_WAIT; a server that sets
//! `SO_REUSEADDR` (redis-server, nginx, tokio's listeners) binds it.

use std::{
    collections::BTreeSet,
    io,
    net::{TcpListener, TcpStream},
    sync::{Mutex, PoisonError},
};

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that nothing listened on when it was picked, that no earlier call
/// returned, and that `bind(0)` will not pick for a minute.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let port = reserved().expect("a free loopback port");
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A port left in TIME_WAIT by its listening side (std sets `SO_REUSEADDR` on listeners).
fn reserved() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let client = TcpStream::connect(addr)?;
    let (accepted, _) = listener.accept()?;
    drop(accepted); // the listening side closes first: its end of the connection waits
    drop(client);
    Ok(addr.port())
}

#[test]
fn no_port_is_handed_out_twice() {
    let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
    let distinct: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), ports.len());
}

/// 60,000 picks among ~14,000 ports would land on an unreserved one 98.6 % of the time.
#[test]
fn a_handed_out_port_is_not_picked_by_bind_0_and_a_server_can_listen_on_it() {
    let port = free_port();
    let picked_by_bind_0 = (0..60_000)
        .filter(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind(0)");
            listener.local_addr().expect("its address").port() == port
        })
        .count();
    assert_eq!(picked_by_bind_0, 0, "bind(0) picked the reserved port");
    let server = TcpListener::bind(("127.0.0.1", port)).expect("a server binds the port");
    let client = TcpStream::connect(("127.0.0.1", port)).expect("and accepts connections");
    assert_eq!(client.peer_addr().unwrap(), server.local_addr().unwrap());
}
