//! systemd service notifications (`sd_notify`), written by hand: one
//! datagram to the socket named in `NOTIFY_SOCKET`.
//!
//! Outside systemd the variable is unset and every call does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Connection to the service manager, if the process runs under one.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` from the environment.
    pub fn from_env() -> Notifier {
        let path = std::env::var("NOTIFY_SOCKET").ok().filter(|path| !path.is_empty());
        let socket = path.and_then(|path| match UnixDatagram::unbound() {
            Ok(socket) => Some((socket, path)),
            Err(error) => {
                log::warn!("cannot create the systemd notify socket: {error}");
                None
            }
        });
        Notifier { socket }
    }

    /// Whether a service manager listens.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `READY=1`.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=ingesting");
    }

    /// Sends `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Sends `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down");
    }

    fn send(&self, message: &str) {
        let Some((socket, path)) = &self.socket else { return };
        if let Err(error) = send_to(socket, path, message) {
            log::warn!("systemd notification {message:?} to {path} failed: {error}");
        }
    }
}

fn send_to(socket: &UnixDatagram, path: &str, message: &str) -> io::Result<usize> {
    // A leading '@' names a socket in the abstract namespace.
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(message.as_bytes(), &address)
    } else {
        socket.send_to(message.as_bytes(), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_reaches_socket() {
        let path =
            std::env::temp_dir().join(format!("binance-ingest-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), path.display().to_string())),
        };
        notifier.ready();
        let mut buffer = [0u8; 128];
        let length = listener.recv(&mut buffer).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&buffer[..length], b"READY=1\nSTATUS=ingesting");
    }
}
