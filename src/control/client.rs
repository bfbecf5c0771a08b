//! A blocking client for the control socket (what `sluice ctl` uses).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Request, Response};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("sluice is not running: no control socket at {0} (start it, or pass --socket PATH)")]
    NotRunning(PathBuf),
    #[error("sluice is not running: {0} exists but no one listens (a crashed run left it)")]
    Refused(PathBuf),
    #[error("permission denied on {0}: the socket is owner-only; run as the user sluice runs as (or root)")]
    Permission(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sluice closed the connection without answering")]
    Closed,
    #[error("unreadable reply from sluice: {0}")]
    BadReply(String),
}

/// One connection to the control socket.
pub struct Client {
    path: PathBuf,
    stream: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let p = path.to_path_buf();
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClientError::NotRunning(p.clone()),
            std::io::ErrorKind::ConnectionRefused => ClientError::Refused(p.clone()),
            std::io::ErrorKind::PermissionDenied => ClientError::Permission(p.clone()),
            _ => ClientError::Io {
                path: p.clone(),
                source: e,
            },
        })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        Ok(Client {
            path: p,
            stream: BufReader::new(stream),
        })
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.send_line(&req.to_line())
    }

    /// Sends a raw line (newline included) and waits for one reply.
    pub fn send_line(&mut self, line: &str) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        self.stream
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(io)?;
        let mut reply = String::new();
        let n = self
            .stream
            .read_line(&mut reply)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        serde_json::from_str(reply.trim_end())
            .map_err(|e| ClientError::BadReply(format!("{e}: {reply}")))
    }
}
