//! Typed parameter values: numbers, booleans, durations with units, lists.
//!
//! These take an already `$`-expanded string. Errors are plain messages; the
//! caller adds the parameter name and where it was set.

use std::time::Duration;

/// A whole number, as Postfix accepts for sizes and counts (no unit suffixes).
pub fn parse_int(value: &str) -> Result<i64, String> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("bad numerical configuration: \"{value}\""))
}

/// `yes` or `no`, case-insensitive, as Postfix does.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("bad boolean configuration: \"{value}\"")),
    }
}

/// A duration: a number with an optional unit `s`, `m`, `h`, `d` or `w`;
/// without a unit, `default_unit` applies (Postfix's per-parameter default unit).
pub fn parse_time(value: &str, default_unit: char) -> Result<Duration, String> {
    let v = value.trim();
    let bad = || format!("bad time value: \"{value}\"");
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => {
            let unit = &v[i..];
            if unit.chars().count() != 1 {
                return Err(bad());
            }
            (&v[..i], unit.chars().next().unwrap_or(default_unit))
        }
        None => (v, default_unit),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit.to_ascii_lowercase() {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// Splits a list value the way Postfix does: commas and/or white space separate items.
pub fn split_list(value: &str) -> Vec<String> {
    // As Postfix's mystrtokq: separators inside `{...}` do not split, so
    // `inline:{a=b, c=d}` stays one item.
    let mut out = Vec::new();
    let mut item = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 && (c == ',' || c.is_whitespace()) => {
                if !item.is_empty() {
                    out.push(std::mem::take(&mut item));
                }
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    if !item.is_empty() {
        out.push(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values_take_units_and_default_unit() {
        assert_eq!(parse_time("300s", 's'), Ok(Duration::from_secs(300)));
        assert_eq!(parse_time("1d", 's'), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_time("5", 'd'), Ok(Duration::from_secs(5 * 86400)));
        assert_eq!(parse_time("2w", 's'), Ok(Duration::from_secs(2 * 604_800)));
        assert_eq!(parse_time("3H", 's'), Ok(Duration::from_secs(3 * 3600)));
        assert!(parse_time("5x", 's').is_err());
        assert!(parse_time("5ss", 's').is_err());
        assert!(parse_time("", 's').is_err());
        assert!(parse_time("-1s", 's').is_err());
        assert!(parse_time("99999999999999999999w", 's').is_err());
    }

    #[test]
    fn lists_keep_braced_items_whole() {
        assert_eq!(
            split_list("hash:/a, inline:{a=b, c=d}\n\tb"),
            ["hash:/a", "inline:{a=b, c=d}", "b"]
        );
        assert_eq!(split_list(" a,,b "), ["a", "b"]);
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(parse_int("10240000"), Ok(10_240_000));
        assert!(parse_int("10M").is_err());
        assert_eq!(parse_bool("Yes"), Ok(true));
        assert_eq!(parse_bool("no"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn lists_split_on_commas_and_spaces() {
        assert_eq!(
            split_list("$myhostname, localhost.$mydomain,localhost  $mydomain"),
            [
                "$myhostname",
                "localhost.$mydomain",
                "localhost",
                "$mydomain"
            ]
        );
        assert!(split_list(" , ").is_empty());
    }
}
