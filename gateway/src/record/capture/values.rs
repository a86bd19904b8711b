//! Values kept up to a cap, and binary parameter and column values decoded by type OID into the
//! same text PostgreSQL would print, so a value looks the same whichever format the client used.

use chrono::{DateTime, NaiveDate};

use super::super::event::Capped;

pub(super) const FORMAT_BINARY: i16 = 1;

/// Text kept up to `max` bytes, cut on a character boundary; `len` is the full length.
pub(super) fn capped_text(text: &str, max: usize, len: usize) -> Capped {
    let cut = text.floor_char_boundary(max.min(text.len()));
    Capped {
        text: text[..cut].to_owned(),
        len: len as u64,
        hex: false,
        redacted: false,
    }
}

/// Bytes kept as lowercase hex, at most `max` hex characters.
pub(super) fn capped_hex(bytes: &[u8], max: usize, len: usize) -> Capped {
    let kept = &bytes[..bytes.len().min(max / 2)];
    Capped {
        text: hex::encode(kept),
        len: len as u64,
        hex: true,
        redacted: false,
    }
}

/// Text when the bytes are UTF-8 (a character cut off at the end of a prefix is tolerated),
/// hex otherwise.
pub(super) fn capped_text_or_hex(bytes: &[u8], max: usize, len: usize) -> Capped {
    match valid_utf8_prefix(bytes, bytes.len() < len) {
        Some(text) => capped_text(text, max, len),
        None => capped_hex(bytes, max, len),
    }
}

/// `bytes` as text; when `is_prefix`, an incomplete character at the very end is dropped.
pub(super) fn valid_utf8_prefix(bytes: &[u8], is_prefix: bool) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(e) if is_prefix && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

/// A parameter or column value: `bytes` (of a value `len` bytes long, fewer when cut off with a
/// streamed message) in `format`, of type `type_oid` (0 when unknown).
pub(super) fn decode(type_oid: u32, format: i16, bytes: &[u8], len: usize, max: usize) -> Capped {
    if format != FORMAT_BINARY {
        return capped_text_or_hex(bytes, max, len);
    }
    let whole = bytes.len() == len;
    match whole.then(|| decode_binary(type_oid, bytes)).flatten() {
        Some(Decoded::Text(text)) => capped_text(&text, max, text.len()),
        Some(Decoded::Hex) | None => capped_hex(bytes, max, len),
    }
}

enum Decoded {
    Text(String),
    /// A type kept as hex on purpose (bytea).
    Hex,
}

const OID_BOOL: u32 = 16;
const OID_BYTEA: u32 = 17;
const OID_NAME: u32 = 19;
const OID_INT8: u32 = 20;
const OID_INT2: u32 = 21;
const OID_INT4: u32 = 23;
const OID_TEXT: u32 = 25;
const OID_OID: u32 = 26;
const OID_JSON: u32 = 114;
const OID_FLOAT4: u32 = 700;
const OID_FLOAT8: u32 = 701;
const OID_BPCHAR: u32 = 1042;
const OID_VARCHAR: u32 = 1043;
const OID_DATE: u32 = 1082;
const OID_TIMESTAMP: u32 = 1114;
const OID_TIMESTAMPTZ: u32 = 1184;
const OID_NUMERIC: u32 = 1700;
const OID_UUID: u32 = 2950;
const OID_JSONB: u32 = 3802;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

fn decode_binary(type_oid: u32, b: &[u8]) -> Option<Decoded> {
    let text = match type_oid {
        OID_BOOL => match b {
            [0] => "f".to_owned(),
            [1] => "t".to_owned(),
            _ => return None,
        },
        OID_INT2 => i16::from_be_bytes(b.try_into().ok()?).to_string(),
        OID_INT4 => i32::from_be_bytes(b.try_into().ok()?).to_string(),
        OID_INT8 => i64::from_be_bytes(b.try_into().ok()?).to_string(),
        OID_OID => u32::from_be_bytes(b.try_into().ok()?).to_string(),
        OID_FLOAT4 => float_text(f32::from_be_bytes(b.try_into().ok()?).into(), |v| {
            pg_float_spelling((v as f32).to_string(), format!("{:e}", v as f32), 6)
        }),
        OID_FLOAT8 => float_text(f64::from_be_bytes(b.try_into().ok()?), |v| {
            pg_float_spelling(v.to_string(), format!("{v:e}"), 15)
        }),
        OID_TEXT | OID_VARCHAR | OID_BPCHAR | OID_NAME | OID_JSON => {
            std::str::from_utf8(b).ok()?.to_owned()
        }
        // jsonb's binary form is a version byte (1) and the JSON text.
        OID_JSONB => match b.split_first() {
            Some((1, json)) => std::str::from_utf8(json).ok()?.to_owned(),
            _ => return None,
        },
        OID_BYTEA => return Some(Decoded::Hex),
        OID_UUID => uuid::Uuid::from_slice(b).ok()?.hyphenated().to_string(),
        OID_DATE => date_text(i32::from_be_bytes(b.try_into().ok()?))?,
        OID_TIMESTAMP => timestamp_text(i64::from_be_bytes(b.try_into().ok()?), "")?,
        OID_TIMESTAMPTZ => timestamp_text(i64::from_be_bytes(b.try_into().ok()?), "+00")?,
        OID_NUMERIC => numeric_text(b)?,
        _ => return None,
    };
    Some(Decoded::Text(text))
}

/// PostgreSQL spells the special values `Infinity`, `-Infinity` and `NaN`.
fn float_text(v: f64, finite: impl Fn(f64) -> String) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        finite(v)
    }
}

/// PostgreSQL's spelling of a finite float from Rust's shortest round-trip digits: positional
/// for decimal exponents from -4 up to `digits - 1` (15 for float8, 6 for float4, as `%g` with
/// `DBL_DIG`/`FLT_DIG`), otherwise scientific with a sign and at least two exponent digits
/// (`1e+20`, `1.5e-07`).
fn pg_float_spelling(plain: String, scientific: String, digits: i32) -> String {
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return plain;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return plain;
    };
    if plain == "0" || plain == "-0" || (-4..digits).contains(&exponent) {
        return plain;
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

fn date_text(days: i32) -> Option<String> {
    match days {
        i32::MAX => Some("infinity".to_owned()),
        i32::MIN => Some("-infinity".to_owned()),
        _ => {
            let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)?;
            Some(
                epoch
                    .checked_add_signed(chrono::Duration::try_days(days.into())?)?
                    .format("%Y-%m-%d")
                    .to_string(),
            )
        }
    }
}

fn timestamp_text(micros: i64, zone: &str) -> Option<String> {
    match micros {
        i64::MAX => Some("infinity".to_owned()),
        i64::MIN => Some("-infinity".to_owned()),
        _ => {
            let unix = micros.checked_add(POSTGRES_EPOCH_UNIX_MICROS)?;
            let at = DateTime::from_timestamp_micros(unix)?.naive_utc();
            // Like PostgreSQL: fractional seconds only when there are some, without trailing zeros.
            let mut text = at.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
            let trimmed = text.trim_end_matches('0').trim_end_matches('.').len();
            text.truncate(trimmed);
            text.push_str(zone);
            Some(text)
        }
    }
}

/// numeric's binary form: digit count, weight (of the first digit, in base-10000 digits), sign,
/// display scale, then base-10000 digits.
fn numeric_text(b: &[u8]) -> Option<String> {
    const NEGATIVE: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const POSITIVE_INFINITY: u16 = 0xD000;
    const NEGATIVE_INFINITY: u16 = 0xF000;
    let field =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])) };
    let ndigits = usize::from(field(0)?);
    let weight = i32::from(field(2)? as i16);
    let sign = field(4)?;
    let dscale = usize::from(field(6)?);
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        NAN => return Some("NaN".to_owned()),
        POSITIVE_INFINITY => return Some("Infinity".to_owned()),
        NEGATIVE_INFINITY => return Some("-Infinity".to_owned()),
        0 | NEGATIVE => {}
        _ => return None,
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| field(8 + 2 * i))
        .collect::<Option<_>>()?;
    if digits.iter().any(|&d| d >= 10_000) {
        return None;
    }
    let digit_at = |position: i32| -> u16 {
        usize::try_from(weight - position)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == NEGATIVE {
        out.push('-');
    }
    // Integer part: base-10000 digits from `weight` down to 0, the first without leading zeros.
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit_at(weight).to_string());
        for position in (0..weight).rev() {
            out.push_str(&format!("{:04}", digit_at(position)));
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut fraction = String::new();
        let mut position = -1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit_at(position)));
            position -= 1;
        }
        fraction.truncate(dscale);
        out.push_str(&fraction);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(oid: u32, bytes: &[u8]) -> String {
        decode(oid, FORMAT_BINARY, bytes, bytes.len(), 4096).text
    }

    #[test]
    fn binary_values_decode_to_postgres_text() {
        assert_eq!(binary(OID_BOOL, &[1]), "t");
        assert_eq!(binary(OID_INT2, &(-7i16).to_be_bytes()), "-7");
        assert_eq!(binary(OID_INT4, &42i32.to_be_bytes()), "42");
        assert_eq!(
            binary(OID_INT8, &(1i64 << 40).to_be_bytes()),
            "1099511627776"
        );
        assert_eq!(binary(OID_FLOAT4, &1.5f32.to_be_bytes()), "1.5");
        // As PostgreSQL prints them (extra_float_digits = 1, its default since version 12).
        for (v, pg) in [
            (1e20, "1e+20"),
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-2.5e-300, "-2.5e-300"),
            (123.25, "123.25"),
            (0.0, "0"),
            (-0.0, "-0"),
        ] {
            assert_eq!(binary(OID_FLOAT8, &f64::to_be_bytes(v)), pg, "{v:e}");
        }
        assert_eq!(binary(OID_FLOAT4, &1e6f32.to_be_bytes()), "1e+06");
        assert_eq!(binary(OID_FLOAT4, &100000f32.to_be_bytes()), "100000");
        assert_eq!(
            binary(OID_FLOAT8, &f64::NEG_INFINITY.to_be_bytes()),
            "-Infinity"
        );
        assert_eq!(binary(OID_TEXT, "héllo".as_bytes()), "héllo");
        assert_eq!(binary(OID_JSONB, b"\x01{\"a\":1}"), "{\"a\":1}");
        assert_eq!(
            binary(OID_UUID, &[0x12; 16]),
            "12121212-1212-1212-1212-121212121212"
        );
        assert_eq!(binary(OID_DATE, &(-1i32).to_be_bytes()), "1999-12-31");
        assert_eq!(binary(OID_DATE, &i32::MAX.to_be_bytes()), "infinity");
        assert_eq!(
            binary(OID_TIMESTAMP, &1_500_000i64.to_be_bytes()),
            "2000-01-01 00:00:01.5"
        );
        assert_eq!(
            binary(OID_TIMESTAMPTZ, &86_400_000_000i64.to_be_bytes()),
            "2000-01-02 00:00:00+00"
        );
        let bytea = decode(OID_BYTEA, FORMAT_BINARY, &[0xde, 0xad], 2, 4096);
        assert_eq!((bytea.text.as_str(), bytea.hex), ("dead", true));
    }

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    #[test]
    fn binary_numerics_keep_their_scale_and_sign() {
        assert_eq!(
            binary(OID_NUMERIC, &numeric(2, 1, 0, 2, &[12, 3456])),
            "123456.00"
        );
        assert_eq!(
            binary(OID_NUMERIC, &numeric(2, 0, 0x4000, 3, &[1, 2300])),
            "-1.230"
        );
        assert_eq!(
            binary(OID_NUMERIC, &numeric(1, -2, 0, 6, &[500])),
            "0.000005"
        );
        assert_eq!(binary(OID_NUMERIC, &numeric(0, 0, 0, 0, &[])), "0");
        assert_eq!(binary(OID_NUMERIC, &numeric(0, 0, 0xC000, 0, &[])), "NaN");
    }

    #[test]
    fn undecodable_binary_values_are_kept_as_hex() {
        let wrong_width = decode(OID_INT4, FORMAT_BINARY, &[1, 2], 2, 4096);
        assert_eq!((wrong_width.text.as_str(), wrong_width.hex), ("0102", true));
        let unknown_type = decode(600, FORMAT_BINARY, &[0xff], 1, 4096);
        assert!(unknown_type.hex);
    }

    #[test]
    fn text_is_cut_on_a_character_boundary_and_keeps_its_full_length() {
        let v = capped_text("aé", 2, 3);
        assert_eq!((v.text.as_str(), v.len), ("a", 3));
        assert!(v.is_truncated());
        let h = capped_hex(&[1, 2, 3], 4, 3);
        assert_eq!(h.text, "0102");
        assert!(h.is_truncated());
    }

    #[test]
    fn a_prefix_cut_inside_a_character_is_still_text() {
        let bytes = "aé".as_bytes();
        let v = capped_text_or_hex(&bytes[..2], 100, 3);
        assert_eq!((v.text.as_str(), v.hex, v.len), ("a", false, 3));
    }
}
