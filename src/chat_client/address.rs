//! The `--address` the user typed, made into the `host:port` the connection
//! needs: a missing port means [`DEFAULT_PORT`], and an address that can
//! never work is refused before any attempt, rather than retried as if the
//! server were only down.
//!
//! ```text
//! chat.example        → chat.example:50053
//! 127.0.0.1           → 127.0.0.1:50053
//! ::1  or  [::1]      → [::1]:50053
//! chat.example:6000   → chat.example:6000
//! chat.example:http   → error: the port must be a number from 1 to 65535
//! ```
//!
//! Pure: no name resolution here (that happens when dialling).

use std::net::Ipv6Addr;

/// The port `chat-server` listens on by default.
pub const DEFAULT_PORT: u16 = 50053;

/// `address` as `host:port`, [`DEFAULT_PORT`] when it has none; `Err` says
/// what is wrong with it.
pub fn with_default_port(address: &str) -> Result<String, String> {
    let address = address.trim();
    if address.is_empty() {
        return Err("empty; give HOST or HOST:PORT".to_owned());
    }
    // A bare IPv6 address: its colons are not a port separator.
    if let Ok(ip) = address.parse::<Ipv6Addr>() {
        return Ok(format!("[{ip}]:{DEFAULT_PORT}"));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        let Some((ip, after)) = rest.split_once(']') else {
            return Err("an IPv6 address needs its closing `]`".to_owned());
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{ip:?} is not an IPv6 address"));
        }
        match after {
            "" => (&address[..ip.len() + 2], None),
            _ => match after.strip_prefix(':') {
                Some(port) => (&address[..ip.len() + 2], Some(port)),
                None => return Err("expected `:PORT` after `]`".to_owned()),
            },
        }
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err("no host before the port".to_owned());
    }
    match port {
        None => Ok(format!("{host}:{DEFAULT_PORT}")),
        Some(port) => match port.parse::<u16>() {
            Ok(n) if n > 0 => Ok(format!("{host}:{n}")),
            _ => Err(format!(
                "the port {port:?} is not a number from 1 to 65535 (without a port, \
                 {DEFAULT_PORT} is used)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_port_is_the_default() {
        for (typed, meant) in [
            ("127.0.0.1", "127.0.0.1:50053"),
            ("chat.example", "chat.example:50053"),
            (" localhost ", "localhost:50053"),
            ("::1", "[::1]:50053"),
            ("[::1]", "[::1]:50053"),
            ("[::1]:6000", "[::1]:6000"),
            ("chat.example:6000", "chat.example:6000"),
        ] {
            assert_eq!(with_default_port(typed).as_deref(), Ok(meant), "{typed:?}");
        }
    }

    #[test]
    fn addresses_that_cannot_work() {
        for typed in [
            "",
            "host:",
            "host:http",
            "host:0",
            "host:65536",
            ":6000",
            "[::1",
            "[nope]:1",
            "[::1]6000",
        ] {
            assert!(with_default_port(typed).is_err(), "{typed:?}");
        }
    }
}
