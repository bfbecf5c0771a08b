//! The systemd notification protocol (`sd_notify(3)`), without libsystemd:
//! a datagram to the Unix socket named by `$NOTIFY_SOCKET`. With
//! `Type=notify` (config/sluice.service) systemd considers sluice started
//! only once it says `READY=1`, which it does when every worker runs the
//! configuration and the control socket answers: units ordered after it,
//! and `systemctl start` itself, wait for a forwarding data path.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") to the service manager, if sluice runs
/// under one; does nothing otherwise. A manager that cannot be reached is
/// logged, never fatal: sluice forwards regardless.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (Linux): the name follows a NUL byte.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(state.as_bytes(), &addr)
            }
            None => s.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(socket = ?path, error = %e, "could not notify the service manager");
    }
}

/// Tells the service manager sluice forwards now.
pub fn ready(status: &str) {
    notify(&format!(
        "READY=1\nSTATUS={status}\nMAINPID={}",
        std::process::id()
    ));
}

/// Tells the service manager sluice is stopping.
pub fn stopping() {
    notify("STOPPING=1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_the_socket_in_notify_socket() {
        let dir = std::env::temp_dir().join(format!("sluice-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        // The variable is process-wide: this is the only test that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready("forwarding");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.starts_with("READY=1\nSTATUS=forwarding\nMAINPID="),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
