//! Loopback ports for the real programs the tests start (redis-server, its sentinel, nginx,
//! the Lambda emulator), which take a port number instead of binding port 0 themselves.
//!
//! The kernel picks the port of each `bind(0)` at random among the ~14,000 of its parity in
//! the ephemeral range, independently of earlier picks, so the dozens of servers this binary
//! starts would now and then be given the same port twice. The second server to bind it exits,
//! and its test, waiting for the port to accept connections, would go on talking to the first
//! test's server. So each port is handed out at most once per test process.

use std::{
    collections::BTreeSet,
    net::TcpListener,
    sync::{Mutex, PoisonError},
};

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port that nothing listened on when it was picked and that no earlier call
/// returned.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free loopback port");
        if handed_out.insert(port) {
            return port;
        }
    }
}

#[test]
fn no_port_is_handed_out_twice() {
    let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
    let distinct: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), ports.len());
}
