//! Checks on names that both the console and the command line accept from people: one rule,
//! one message, wherever a target is added.

/// Longest host name accepted (DNS allows 253).
pub const MAX_HOST_BYTES: usize = 253;

/// A target name is what people type as the database name at the gateway and what appears in
/// connection strings, URLs and shell commands: letters, digits, `_`, `-` and `.`, starting
/// with a letter, digit or `_`, at most 63 bytes.
pub fn target_name(value: &str) -> Result<String, String> {
    let name = value.trim();
    let bad = |why: &str| {
        format!(
            "The target name {why}: use letters, digits, '_', '-' and '.', starting with a \
             letter, digit or '_' (at most 63)."
        )
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > 63 {
        return Err(bad("is too long"));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !first_ok || !rest_ok {
        return Err(bad(&format!(
            "'{name}' has a character that is not allowed"
        )));
    }
    Ok(name.to_string())
}

/// A host name or IP address (IPv6 without brackets), as the gateway connects to it.
pub fn host(value: &str) -> Result<String, String> {
    let host = value.trim();
    if host.is_empty() {
        return Err("The host is empty.".into());
    }
    if host.len() > MAX_HOST_BYTES {
        return Err(format!(
            "The host is longer than {MAX_HOST_BYTES} characters."
        ));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(format!(
            "The host '{host}' is not a host name or IP address (letters, digits, '.', '-', \
             '_', and ':' for IPv6; no brackets, no port)."
        ));
    }
    // A colon belongs to an IPv6 address; anything else with one is a host with its port.
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "The host '{host}' is neither a host name nor an IPv6 address: give the port \
             separately."
        ));
    }
    Ok(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_and_hosts_people_could_not_type_are_refused() {
        assert_eq!(target_name(" shop ").unwrap(), "shop");
        assert!(target_name("we ird/<b>?#x").is_err());
        assert!(target_name("-shop").is_err());
        assert!(target_name(&"a".repeat(64)).is_err());
        assert_eq!(host("db.internal").unwrap(), "db.internal");
        assert_eq!(host("::1").unwrap(), "::1");
        assert!(host("db:5432").is_err());
        assert!(host("[::1]").is_err());
        assert!(host("").is_err());
    }
}
