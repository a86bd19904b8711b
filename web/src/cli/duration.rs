//! Durations as people type them: `90s`, `30m`, `8h`, `1d`, `1h30m`.

/// Parses a duration into whole seconds. A bare number is seconds.
pub fn parse_secs(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let bad = || format!("'{text}' is not a duration; write e.g. 90s, 30m, 8h, 1d or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<i64>() {
        return if secs > 0 { Ok(secs) } else { Err(bad()) };
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

/// The shortest exact spelling: 5400 -> `1h30m`, 30 -> `30s`.
pub fn format_secs(secs: i64) -> String {
    if secs <= 0 {
        return format!("{secs}s");
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_spellings_parse() {
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("30m"), Ok(1800));
        assert_eq!(parse_secs("1h"), Ok(3600));
        assert_eq!(parse_secs("8h"), Ok(28_800));
        assert_eq!(parse_secs("1d"), Ok(86_400));
        assert_eq!(parse_secs("1h30m"), Ok(5400));
        assert_eq!(parse_secs("45"), Ok(45));
    }

    #[test]
    fn nonsense_is_refused_with_examples() {
        for bad in [
            "",
            "0",
            "-5",
            "h",
            "10x",
            "1.5h",
            "30m5",
            "99999999999999999999d",
        ] {
            let err = parse_secs(bad).unwrap_err();
            assert!(err.contains("30m"), "{bad}: {err}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for secs in [1, 59, 60, 90, 1800, 3600, 5400, 28_800, 86_400, 90_061] {
            assert_eq!(parse_secs(&format_secs(secs)), Ok(secs));
        }
        assert_eq!(format_secs(1800), "30m");
        assert_eq!(format_secs(5400), "1h30m");
    }
}
