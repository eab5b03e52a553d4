//! The `grpc-timeout` request header: how long the client will wait for the call.
//!
//! ```text
//!   grpc-timeout: 100m          Timeout → "grpc-timeout" TimeoutValue TimeoutUnit
//!                 ^^^ ^
//!                 |   unit: H hours, M minutes, S seconds,
//!                 |         m milliseconds, u microseconds, n nanoseconds
//!                 value: 1 to 8 ASCII digits
//! ```
//!
//! The header carries a relative *timeout*, not an absolute deadline, because the two
//! hosts' clocks need not agree; each side turns it into a deadline on its own clock
//! when the request is sent or received. Eight digits cap the value at 99,999,999 of
//! a unit, so a sender picks the finest unit that fits: nanoseconds up to 0.1 s,
//! hours for anything above ~3.2 years.
//!
//! "If Timeout is omitted a server should assume an infinite timeout."

use std::fmt;
use std::time::Duration;

/// The header name.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// "TimeoutValue → {positive integer as ASCII string of at most 8 digits}"
const MAX_DIGITS: usize = 8;
const MAX_VALUE: u64 = 99_999_999;

/// Units from finest to coarsest, with their length in nanoseconds.
const UNITS: [(u8, u64); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60 * 1_000_000_000),
    (b'H', 3_600 * 1_000_000_000),
];

/// Why a `grpc-timeout` value is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutError {
    /// No digits (empty value, or a unit alone).
    Empty,
    /// More than 8 digits.
    TooManyDigits,
    /// A byte other than an ASCII digit before the unit.
    NotADigit,
    /// The last byte is not one of `H M S m u n`.
    BadUnit,
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutError::Empty => "grpc-timeout has no value",
            TimeoutError::TooManyDigits => "grpc-timeout value has more than 8 digits",
            TimeoutError::NotADigit => "grpc-timeout value is not a decimal integer",
            TimeoutError::BadUnit => "grpc-timeout unit is not one of H, M, S, m, u, n",
        })
    }
}

impl std::error::Error for TimeoutError {}

/// Parses a `grpc-timeout` value such as `"1S"` or `"250m"`.
///
/// Zero ("0m") is accepted and means the deadline has already passed, though the
/// grammar says "positive". Units are case-sensitive: `M` is minutes, `m` milliseconds.
pub fn parse_timeout(value: &[u8]) -> Result<Duration, TimeoutError> {
    let Some((&unit, digits)) = value.split_last() else {
        return Err(TimeoutError::Empty);
    };
    // "TimeoutUnit → Hour / Minute / Second / Millisecond / Microsecond / Nanosecond"
    let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(TimeoutError::BadUnit);
    };
    if digits.is_empty() {
        return Err(TimeoutError::Empty);
    }
    // "TimeoutValue → {positive integer as ASCII string of at most 8 digits}"
    if digits.len() > MAX_DIGITS {
        return Err(TimeoutError::TooManyDigits);
    }
    let mut count: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(TimeoutError::NotADigit);
        }
        // At most 8 digits: cannot overflow.
        count = count * 10 + u64::from(d - b'0');
    }
    // 99,999,999 H is ~3.6e20 ns, beyond u64 nanoseconds; go through seconds.
    let nanos = u128::from(count) * u128::from(unit_nanos);
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 1e9, so it always fits in u32.
    let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, subsec))
}

/// Formats `d` for `grpc-timeout`: the finest unit whose value fits in 8 digits,
/// rounded up so the peer never sees a shorter timeout than we hold. Saturates at
/// `"99999999H"` (about 11,400 years); `Duration::ZERO` is `"0n"`.
pub fn format_timeout(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, unit_nanos) in UNITS {
        let count = nanos.div_ceil(u128::from(unit_nanos));
        if count <= u128::from(MAX_VALUE) {
            return format!("{count}{}", char::from(unit));
        }
    }
    format!("{MAX_VALUE}H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Result<Duration, TimeoutError>)] = &[
            // the spec's example request uses "grpc-timeout = 1S"
            ("1S", Ok(Duration::from_secs(1))),
            ("100m", Ok(ms(100))),
            ("2H", Ok(Duration::from_secs(7_200))),
            ("3M", Ok(Duration::from_secs(180))),
            ("5u", Ok(Duration::from_micros(5))),
            ("7n", Ok(Duration::from_nanos(7))),
            ("0m", Ok(Duration::ZERO)),
            ("00000001S", Ok(Duration::from_secs(1))),
            ("99999999n", Ok(Duration::from_nanos(99_999_999))),
            ("99999999H", Ok(Duration::from_secs(99_999_999 * 3_600))),
            ("", Err(TimeoutError::Empty)),
            ("S", Err(TimeoutError::Empty)),
            ("1", Err(TimeoutError::BadUnit)),
            ("1s", Err(TimeoutError::BadUnit)),
            ("1h", Err(TimeoutError::BadUnit)),
            ("1 S", Err(TimeoutError::NotADigit)),
            ("-1S", Err(TimeoutError::NotADigit)),
            ("+1S", Err(TimeoutError::NotADigit)),
            ("1.5S", Err(TimeoutError::NotADigit)),
            ("123456789S", Err(TimeoutError::TooManyDigits)),
            ("99999999999999999999999H", Err(TimeoutError::TooManyDigits)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_timeout(input.as_bytes()), *want, "{input:?}");
        }
    }

    #[test]
    fn format_table() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(1), "1n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            // 100 ms = 1e8 ns: 9 digits in n, so microseconds
            (Duration::from_millis(100), "100000u"),
            (Duration::from_secs(1), "1000000u"),
            // rounding up when the finest fitting unit is coarser than the duration
            (Duration::new(100, 1), "100001m"),
            // 100,000 s = 1e8 ms (9 digits), so seconds
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(99_999_999), "99999999S"),
            (Duration::from_secs(100_000_000), "1666667M"),
            (Duration::from_secs(60 * 99_999_999 + 1), "1666667H"),
            (Duration::MAX, "99999999H"),
        ];
        for (d, want) in cases {
            assert_eq!(format_timeout(*d), *want, "{d:?}");
        }
    }

    #[test]
    fn format_then_parse_never_shortens() {
        for d in [
            Duration::from_nanos(123_456_789),
            Duration::new(12_345, 678_901_234),
            Duration::from_secs(99_999_999 * 3_600),
        ] {
            let back = parse_timeout(format_timeout(d).as_bytes()).unwrap();
            assert!(back >= d, "{d:?} -> {back:?}");
        }
    }
}
