//! Token authentication: a table of bearer tokens, each naming the user it
//! belongs to, and the check of a call's `authorization` metadata against it.
//!
//! # The token file
//!
//! One token per line, then whitespace, then the user name it speaks as.
//! Blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! # token                              user
//! 3f9c1e0b6a7d4c2e8b5a9f1d0c7e6b4a     alice
//! 9b2d7f4e1c8a6b3d5e0f2a7c9d1b8e6f     bob
//! ```
//!
//! A token is 1 to [`MAX_TOKEN_LEN`] visible ASCII characters (it travels in
//! an HTTP/2 header value); the name follows the server's name rules. One
//! user may have several tokens (several devices); a token may appear once.
//!
//! # On the wire
//!
//! Clients send `authorization: Bearer <token>` (RFC 6750 §2.1; gRPC carries
//! it as ordinary request metadata). A call without a valid token ends with
//! `UNAUTHENTICATED` before it does anything else. Tokens are compared in
//! constant time, and every entry of the table is compared, so how long a
//! check takes says nothing about how much of a guess was right.
//!
//! Tokens are secrets: over plaintext anyone on the path can read them, so
//! use them with TLS. Nothing here logs or echoes one.

use std::collections::HashSet;
use std::fmt;

use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::validate::{self, Limits};
use crate::framing::{MetadataMap, Status};

/// The request metadata key that carries the token.
pub const AUTHORIZATION_METADATA_KEY: &str = "authorization";
/// The longest token accepted in a token file.
pub const MAX_TOKEN_LEN: usize = 256;

/// Tokens and the users they belong to.
#[derive(Clone, Default)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    token: Box<[u8]>,
    user: String,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("TokenTable")
            .field("tokens", &self.entries.len())
            .finish()
    }
}

/// A token must fit an HTTP/2 header value and a whitespace-separated file:
/// visible ASCII only.
fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic())
}

impl TokenTable {
    /// Parses a token file (see the module documentation). The error names
    /// the line, never the token.
    pub fn parse(text: &str, limits: &Limits) -> Result<TokenTable, String> {
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (token, user) = line
                .split_once(|c: char| c.is_ascii_whitespace())
                .ok_or_else(|| format!("line {number}: expected `<token> <user name>`"))?;
            if !valid_token(token) {
                return Err(format!(
                    "line {number}: a token is 1 to {MAX_TOKEN_LEN} visible ASCII characters"
                ));
            }
            let user = validate::name(user, limits)
                .map_err(|why| format!("line {number}: user name {why}"))?;
            if !seen.insert(token) {
                return Err(format!("line {number}: this token already appears above"));
            }
            entries.push(Entry {
                token: token.as_bytes().into(),
                user: user.to_owned(),
            });
        }
        Ok(TokenTable { entries })
    }

    /// How many tokens the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no token (then nobody can get in).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The user `token` belongs to. Compares against every entry in
    /// constant time per entry.
    pub fn user_of(&self, token: &[u8]) -> Option<&str> {
        let mut hit = u32::MAX;
        for (index, entry) in self.entries.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            hit.conditional_assign(&index, entry.token.as_ref().ct_eq(token));
        }
        let index = usize::try_from(hit).ok()?;
        self.entries.get(index).map(|e| e.user.as_str())
    }

    /// The user a call's metadata authenticates, or `UNAUTHENTICATED` saying
    /// what is wrong (never repeating the token).
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<&str, Status> {
        let Some(value) = metadata.get(AUTHORIZATION_METADATA_KEY) else {
            return Err(Status::unauthenticated(
                "this server requires a token: send `authorization: Bearer <token>` metadata",
            ));
        };
        // RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme
        // name is case-insensitive (RFC 9110 §11.1).
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim_start_matches(' '))
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer <token>`")
            })?;
        self.user_of(token.as_bytes())
            .ok_or_else(|| Status::unauthenticated("invalid token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    fn table() -> TokenTable {
        let text = "# tokens for the test\n\
                    \n\
                    tok-alice   alice\n\
                    tok-alice-2 alice\n\
                    \ttok-bob\tbob  \n";
        TokenTable::parse(text, &Limits::default()).unwrap()
    }

    fn metadata(value: Option<&str>) -> MetadataMap {
        let mut map = MetadataMap::new();
        if let Some(value) = value {
            map.insert(AUTHORIZATION_METADATA_KEY, value).unwrap();
        }
        map
    }

    #[test]
    fn parses_tokens_comments_and_blank_lines() {
        let table = table();
        assert_eq!(table.len(), 3);
        assert_eq!(table.user_of(b"tok-alice"), Some("alice"));
        assert_eq!(table.user_of(b"tok-alice-2"), Some("alice"));
        assert_eq!(table.user_of(b"tok-bob"), Some("bob"));
        assert_eq!(table.user_of(b"tok-bo"), None, "a prefix is not a token");
        assert_eq!(table.user_of(b"tok-bobb"), None);
        assert_eq!(table.user_of(b""), None);
    }

    #[test]
    fn bad_files_name_the_line_not_the_token() {
        let limits = Limits::default();
        for (text, expected) in [
            ("secret-token-only\n", "line 1: expected"),
            ("ok alice\nsecret\u{7f}x bob\n", "line 2: a token"),
            ("ok alice\nok bob\n", "line 2: this token already"),
            ("ok server\n", "line 1: user name"),
            ("ok al\u{1b}ice\n", "line 1: user name"),
        ] {
            let err = TokenTable::parse(text, &limits).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn authenticates_bearer_tokens() {
        let table = table();
        assert_eq!(
            table.authenticate(&metadata(Some("Bearer tok-bob"))).ok(),
            Some("bob")
        );
        assert_eq!(
            table.authenticate(&metadata(Some("bearer tok-alice"))).ok(),
            Some("alice")
        );
        for value in [
            None,
            Some("tok-bob"),
            Some("Basic tok-bob"),
            Some("Bearer"),
            Some("Bearer wrong"),
        ] {
            let err = table.authenticate(&metadata(value)).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{value:?}");
            assert!(!err.message().contains("tok-"), "{}", err.message());
        }
    }

    #[test]
    fn debug_output_hides_tokens() {
        assert_eq!(format!("{:?}", table()), "TokenTable { tokens: 3 }");
    }
}
