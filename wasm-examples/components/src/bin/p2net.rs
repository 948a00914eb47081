//! `p2net <addr>`: tries the network (a TCP connection to `addr`, a name lookup, a UDP bind)
//! and prints one `<attempt>: denied (<error>)` or `<attempt>: ALLOWED` line each.
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

fn report<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) {
    match r {
        Ok(_) => println!("{what}: ALLOWED"),
        Err(e) => println!("{what}: denied ({e})"),
    }
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9".into());
    report("connect", TcpStream::connect(&addr));
    report("lookup", ("localhost", 80).to_socket_addrs());
    report("udp bind", UdpSocket::bind("127.0.0.1:0"));
    println!("p2net: done");
}
