//! A minimal HTTP/1.1 server for end-to-end tests (what curl and browsers fetch through
//! the mixnet), and random bodies for it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use rand::Rng;

/// A minimal HTTP/1.1 server on `ip`, serving fixed files; returns its port.
pub fn serve(ip: &str, files: HashMap<String, Arc<Vec<u8>>>) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                match files.get(&path) {
                    Some(body) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = c.write_all(head.as_bytes());
                        let _ = c.write_all(body);
                    }
                    None => {
                        let _ = c.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    port
}

/// `n` random bytes.
pub fn random(n: usize) -> Arc<Vec<u8>> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    Arc::new(v)
}
