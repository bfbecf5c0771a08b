//! A small, fast HTTP/1.1 backend for the latency and connection-rate
//! benchmark (`scripts/bench_latency.sh`): answers every request with its
//! name, keeps connections alive unless the client says `Connection:
//! close` (then the server closes first, as HTTP servers do).
//!
//!     cargo run --release --example lab_http -- NAME ADDR:PORT [THREADS=4]
//!
//! The Python lab server (`scripts/lab_server.py`) spawns a thread per
//! connection and tops out near 2,000 new connections a second on the
//! project's VM, which would hide the difference between the balancers
//! being compared; this one accepts on a fixed pool of threads sharing the
//! listener and serves tens of thousands. Prints `listening` once bound.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

fn serve(mut s: TcpStream, body: &[u8]) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = [0u8; 4096];
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        // Answer every complete request in the buffer (pipelining is rare
        // from the benchmark's clients, but costs nothing to honour).
        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &buf[..end];
            let close = head
                .split(|&b| b == b'\n')
                .any(|l| l.to_ascii_lowercase().starts_with(b"connection: close"));
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                body.len() + 1,
                if close { "Connection: close\r\n" } else { "" }
            );
            let mut out = Vec::with_capacity(reply.len() + body.len() + 1);
            out.extend_from_slice(reply.as_bytes());
            out.extend_from_slice(body);
            out.push(b'\n');
            s.write_all(&out)?;
            if close {
                return Ok(());
            }
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
        if have == buf.len() {
            // A request head larger than 4 KiB: not from our clients.
            return Ok(());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: lab_http NAME ADDR:PORT [THREADS=4]");
        std::process::exit(2);
    }
    let body: Arc<[u8]> = Arc::from(args[1].as_bytes());
    let threads: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(4);
    let listener = match TcpListener::bind(&args[2]) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("lab_http: bind {}: {e}", args[2]);
            std::process::exit(1);
        }
    };
    println!("listening");
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (l, body) = (listener.clone(), body.clone());
            std::thread::spawn(move || loop {
                match l.accept() {
                    // One connection at a time per thread: the benchmark's
                    // clients keep at most a few dozen open.
                    Ok((s, _)) => {
                        let _ = serve(s, &body);
                    }
                    Err(e) => eprintln!("lab_http: accept: {e}"),
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
