//! How a person connects with a credential: the psql command, the libpq URI and the
//! environment variables. Shown by `pgbastion token issue` and by the console.

use gateway::config::Config;
use gateway::credential::Issued;

/// Ready-to-paste ways to connect with one token.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `PGPASSWORD=... psql "host=... port=... dbname=... user=... sslmode=require"`
    pub psql: String,
    /// `postgresql://user:token@host:port/target?sslmode=require`
    pub uri: String,
    /// `export PGHOST=...` lines.
    pub env: String,
}

impl Connection {
    pub fn new(config: &Config, issued: &Issued) -> Connection {
        let cred = &issued.credential;
        let host = &config.gateway.public_host;
        let port = config.gateway.listen.port();
        let conninfo = format!(
            "host={} port={port} dbname={} user={} sslmode=require",
            conninfo_value(host),
            conninfo_value(&cred.target_name),
            conninfo_value(&cred.person_login)
        );
        // Tokens are base64url with dots: safe in a shell word and in a URI without escaping.
        let psql = format!(
            "PGPASSWORD={} psql \"{}\"",
            issued.token,
            conninfo.replace('"', "\\\"")
        );
        let uri_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let uri = format!(
            "postgresql://{}:{}@{uri_host}:{port}/{}?sslmode=require",
            percent_encode(&cred.person_login),
            issued.token,
            percent_encode(&cred.target_name)
        );
        let env = [
            ("PGHOST", host.clone()),
            ("PGPORT", port.to_string()),
            ("PGDATABASE", cred.target_name.clone()),
            ("PGUSER", cred.person_login.clone()),
            ("PGPASSWORD", issued.token.clone()),
            ("PGSSLMODE", "require".to_string()),
        ]
        .iter()
        .map(|(k, v)| format!("export {k}={}", shell_word(v)))
        .collect::<Vec<_>>()
        .join("\n");
        Connection { psql, uri, env }
    }
}

/// A libpq keyword value: quoted when it holds spaces, quotes or backslashes.
pub fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\', '"']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A POSIX shell word: single-quoted unless it is plainly safe.
fn shell_word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/:@".contains(&b));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_values_are_quoted_and_encoded_when_needed() {
        assert_eq!(conninfo_value("shop"), "shop");
        assert_eq!(conninfo_value("my shop"), "'my shop'");
        assert_eq!(conninfo_value("o'neil"), "'o\\'neil'");
        assert_eq!(percent_encode("alice"), "alice");
        assert_eq!(percent_encode("a b@c"), "a%20b%40c");
        assert_eq!(shell_word("o'neil"), "'o'\\''neil'");
        assert_eq!(shell_word("db.internal"), "db.internal");
    }
}
