//! Why the client is not connected, in words for the user: a lost or
//! failed connection ([`Cause`]), a client set up differently from the
//! server ([`Mismatch`]: TLS on one side only, no token) with the flag that
//! fixes it, and which failures end the session rather than being retried.

use std::time::Duration;

use super::session_config::Transport;
use crate::{Code, Status};

/// "0.5s", "2s", "10s".
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Why we are not connected.
#[derive(Debug, Clone)]
pub enum Cause {
    /// The call or connection ended while joined.
    Lost(Status),
    /// Dialling or joining failed.
    ConnectFailed(Status),
}

/// The notice shown while waiting to reconnect.
pub fn disconnect_notice(cause: &Cause, retry_in: Duration) -> String {
    let when = short_duration(retry_in);
    match cause {
        // Unavailable is the connection breaking or the server going away;
        // its message is transport detail the user cannot act on.
        Cause::Lost(status) if status.code() == Code::Unavailable => {
            format!("connection lost, reconnecting in {when}")
        }
        Cause::Lost(status) => {
            format!("disconnected: {}; reconnecting in {when}", reason(status))
        }
        Cause::ConnectFailed(status) => {
            format!("{}; retrying in {when}", reason(status))
        }
    }
}

/// Why we are not connected, without when the next attempt is: what stays
/// the same over failed attempts while nothing changes.
pub fn disconnect_reason(cause: &Cause) -> String {
    match cause {
        Cause::Lost(status) if status.code() == Code::Unavailable => "connection lost".to_owned(),
        Cause::Lost(status) => format!("disconnected: {}", reason(status)),
        Cause::ConnectFailed(status) => reason(status),
    }
}

/// A status as one short phrase for the user.
pub fn reason(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

/// A mismatch between how this client connects and what the server speaks,
/// recognised from the failure it causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// We speak plaintext HTTP/2 to a TLS port: the server's TLS records
    /// read as an HTTP/2 frame header with an impossible length (a TLS
    /// alert `15 03 03 …` is a 1.3 MB frame), so h2 reports a frame size
    /// error before anything else.
    PlaintextToTls,
    /// We start TLS on a plaintext port: the server's HTTP/2 SETTINGS is
    /// not a TLS record.
    TlsToPlaintext,
    /// The server requires a token and we sent none.
    NoToken,
    /// The server refused the token we sent.
    BadToken,
}

/// Which [`Mismatch`], if any, explains a failure to join.
pub fn mismatch(status: &Status, transport: &Transport) -> Option<Mismatch> {
    let message = status.message();
    match (status.code(), &transport.tls, &transport.token) {
        (Code::Unauthenticated, _, None) => Some(Mismatch::NoToken),
        (Code::Unauthenticated, _, Some(_)) => Some(Mismatch::BadToken),
        (_, None, _) if message.contains("frame with invalid size") => {
            Some(Mismatch::PlaintextToTls)
        }
        (_, Some(_), _)
            if message.contains("TLS handshake") && message.contains("InvalidContentType") =>
        {
            Some(Mismatch::TlsToPlaintext)
        }
        _ => None,
    }
}

/// A failure to join as one phrase for the user: for a [`Mismatch`], its
/// likely cause and the flag that changes it; otherwise [`reason`].
pub fn explain(status: &Status, transport: &Transport) -> String {
    match mismatch(status, transport) {
        Some(Mismatch::PlaintextToTls) => format!(
            "the server does not answer in plaintext HTTP/2; it probably expects TLS: add --tls \
             (and --ca FILE for a private CA) ({})",
            reason(status)
        ),
        Some(Mismatch::TlsToPlaintext) => format!(
            "the server does not answer TLS; it probably speaks plaintext: leave out --tls ({})",
            reason(status)
        ),
        Some(Mismatch::NoToken) => "the server requires a token: give it with --token TOKEN \
             or in the CHAT_TOKEN environment variable"
            .to_owned(),
        Some(Mismatch::BadToken) => format!(
            "the server refused the token ({}): check --token or CHAT_TOKEN",
            reason(status)
        ),
        None => reason(status),
    }
}

/// Whether a failure to join should end the session rather than be retried:
/// the server understood us and said no.
pub(crate) fn is_refusal(status: &Status, reconnecting: bool) -> bool {
    match status.code() {
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented
        | Code::FailedPrecondition => true,
        // On a reconnection our old membership may not have been noticed as
        // gone yet: the name frees up shortly.
        Code::AlreadyExists => !reconnecting,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(short_duration(Duration::from_millis(500)), "0.5s");
        assert_eq!(short_duration(Duration::from_secs(2)), "2s");
        assert_eq!(short_duration(Duration::from_secs(10)), "10s");
        assert_eq!(short_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn notices() {
        let lost = Cause::Lost(Status::unavailable("connection lost: broken pipe"));
        assert_eq!(
            disconnect_notice(&lost, Duration::from_secs(2)),
            "connection lost, reconnecting in 2s"
        );
        let kicked = Cause::Lost(Status::resource_exhausted("too slow"));
        assert_eq!(
            disconnect_notice(&kicked, Duration::from_millis(500)),
            "disconnected: too slow; reconnecting in 0.5s"
        );
        let refused = Cause::ConnectFailed(Status::unavailable("cannot connect to h:1: refused"));
        assert_eq!(
            disconnect_notice(&refused, Duration::from_secs(4)),
            "cannot connect to h:1: refused; retrying in 4s"
        );
    }

    #[test]
    fn mismatches_name_the_flag_to_change() {
        let plain = Transport::default();
        let with_token = Transport {
            token: Some("t".into()),
            ..Transport::default()
        };
        let frame = Status::unavailable(
            "this client's HTTP/2 layer (h2) detected a protocol violation by the server and \
             sent GOAWAY FRAME_SIZE_ERROR (h2: connection error detected: frame with invalid size)",
        );
        assert_eq!(mismatch(&frame, &plain), Some(Mismatch::PlaintextToTls));
        assert!(explain(&frame, &plain).contains("add --tls"));
        let who = Status::unauthenticated("this server requires a token");
        assert_eq!(mismatch(&who, &plain), Some(Mismatch::NoToken));
        assert!(explain(&who, &plain).contains("--token TOKEN"));
        assert_eq!(mismatch(&who, &with_token), Some(Mismatch::BadToken));
        assert_eq!(mismatch(&Status::unavailable("refused"), &plain), None);
        assert_eq!(explain(&Status::unavailable("refused"), &plain), "refused");
    }

    #[test]
    fn refusals() {
        assert!(is_refusal(&Status::invalid_argument("bad name"), false));
        assert!(is_refusal(&Status::already_exists("taken"), false));
        assert!(!is_refusal(&Status::already_exists("taken"), true));
        assert!(!is_refusal(&Status::unavailable("down"), false));
        assert!(!is_refusal(&Status::resource_exhausted("full"), true));
    }
}
