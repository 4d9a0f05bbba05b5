//! Shared by the tests that start the `nearcast` binary: one HTTP/1.1 request on a fresh
//! connection (the tests crate has no HTTP client).

use std::io::{Read, Write};
use std::net::TcpStream;

/// `method path` with a JSON `body` to `addr`; returns (status, JSON body or null).
pub fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    request_as(addr, None, method, path, body)
}

/// [`request`] with `Authorization: Bearer <key>` when a key is given.
pub fn request_as(
    addr: &str,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Reads `nearcast serve`'s banner from its piped stdout; returns the address it listens on.
#[allow(dead_code, reason = "not every test binary starts the server this way")]
pub fn banner(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "unexpected banner {line:?}");
    addr
}
