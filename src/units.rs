//! Human units on the command line and in scenario files: sizes (`20GiB`), rates (`1Gbit`,
//! `125MB/s`) and durations (`200ms`).

use std::time::Duration;

/// A value that is not a size, rate or duration we understand.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// Not a size such as `20GiB`.
    #[error("'{0}' is not a size (try 20GiB, 64MiB, 1GB or a byte count)")]
    Size(String),
    /// Not a rate such as `1Gbit`.
    #[error("'{0}' is not a rate (try 1Gbit, 100Mbit, 125MB/s or 10Gbps)")]
    Rate(String),
    /// Not a duration such as `200ms`.
    #[error("'{0}' is not a duration (try 200ms, 1.5s or 0)")]
    Duration(String),
}

/// Parses a size: a byte count, or a number with a unit such as `KiB`, `MiB`, `GiB` (powers
/// of 1024) or `kB`, `MB`, `GB` (powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| UnitError::Size(s.to_string()))
}

/// Parses a rate into bytes per second. Bit rates end in `bit`, `bps` or `b/s` with a
/// decimal prefix (`100Mbit` = 12.5·10⁶ B/s); byte rates are a size followed by `/s`
/// (`125MB/s`, `1GiB/s`).
pub fn parse_rate(s: &str) -> Result<f64, UnitError> {
    let err = || UnitError::Rate(s.to_string());
    let t = s.trim();
    let bits = ["bit/s", "bits", "bit", "bps", "b/s"]
        .iter()
        .find_map(|suffix| t.strip_suffix(suffix));
    let value = if let Some(num) = bits {
        let num = num.trim_end();
        let (digits, mult) = match num.chars().last() {
            Some('k' | 'K') => (&num[..num.len() - 1], 1e3),
            Some('M') => (&num[..num.len() - 1], 1e6),
            Some('G') => (&num[..num.len() - 1], 1e9),
            Some('T') => (&num[..num.len() - 1], 1e12),
            _ => (num, 1.0),
        };
        let v: f64 = digits.trim().parse().map_err(|_| err())?;
        v * mult / 8.0
    } else if let Some(size) = t.strip_suffix("/s") {
        let size = size.trim_end();
        match size.parse::<f64>() {
            Ok(v) => v,
            Err(_) => size
                .parse::<bytesize::ByteSize>()
                .map_err(|_| err())?
                .as_u64() as f64,
        }
    } else {
        return Err(err());
    };
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(err())
    }
}

/// Parses a duration such as `200ms`, `1.5s`, `2m` or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if let Some(secs) = t.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(secs).map_err(|_| UnitError::Duration(s.to_string()));
    }
    humantime::parse_duration(t).map_err(|_| UnitError::Duration(s.to_string()))
}

/// Formats a byte count with binary units, such as `20.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).to_string_as(true)
}

/// Formats a rate in bytes per second as bits per second with a decimal prefix, such as
/// `1 Gbit/s`.
pub fn format_rate(bytes_per_s: f64) -> String {
    let bits = bytes_per_s * 8.0;
    let (v, unit) = if bits >= 1e12 {
        (bits / 1e12, "Tbit/s")
    } else if bits >= 1e9 {
        (bits / 1e9, "Gbit/s")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbit/s")
    } else if bits >= 1e3 {
        (bits / 1e3, "kbit/s")
    } else {
        (bits, "bit/s")
    };
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn rates_take_bits_and_bytes_per_second() {
        assert_eq!(parse_rate("1Gbit"), Ok(125e6));
        assert_eq!(parse_rate("100Mbit"), Ok(12.5e6));
        assert_eq!(parse_rate("10 Gbps"), Ok(1.25e9));
        assert_eq!(parse_rate("125MB/s"), Ok(125e6));
        assert_eq!(parse_rate("1GiB/s"), Ok(1073741824.0));
        assert_eq!(parse_rate("0bit"), Ok(0.0));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("100").is_err());
        assert!(parse_rate("-5Mbit").is_err());
    }

    #[test]
    fn durations_take_ms_and_s() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn rates_format_in_bits() {
        assert_eq!(format_rate(125e6), "1 Gbit/s");
        assert_eq!(format_rate(12.5e6), "100 Mbit/s");
    }
}
