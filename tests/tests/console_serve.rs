//! The console as `pgbastion serve` runs it: over HTTPS when configured, off when disabled,
//! refusing configurations nobody could sign in with; and `pgbastion user`, the local accounts.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use harness::process::port_open;
use harness::{Bastion, ChildGuard, wait_for_port};

fn user_add(bastion: &Bastion, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut all = vec!["user", "add"];
    all.extend_from_slice(args);
    if password.is_some() {
        all.push("--password-stdin");
    }
    let mut child = bastion
        .command(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgbastion user add");
    let mut stdin = child.stdin.take().expect("piped");
    if let Some(password) = password {
        // A command refused before it reads stdin (an existing login, say) closes the pipe
        // first; its exit status and message are what the callers check.
        if let Err(e) = stdin.write_all(password.as_bytes()) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "write password: {e}"
            );
        }
    }
    drop(stdin);
    child.wait_with_output().expect("user add output")
}

fn https_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        // The console's certificate is self-signed here; what is checked is that it speaks TLS.
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_console_serves_https_with_hsts_when_given_a_certificate() {
    let mut bastion = Bastion::new().unwrap();
    let cert = bastion.data_path().join("console.crt");
    let key = bastion.data_path().join("console.key");
    bastion.set_env("PGBASTION_CONSOLE_TLS_CERT", cert.to_str().unwrap());
    bastion.set_env("PGBASTION_CONSOLE_TLS_KEY", key.to_str().unwrap());
    let _serve = bastion.serve().unwrap();
    wait_for_port(bastion.console_addr(), Duration::from_secs(20)).unwrap();
    let client = https_client();

    let res = client
        .get(format!("https://{}/login", bastion.console_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let hsts = res.headers()["strict-transport-security"].to_str().unwrap();
    assert!(hsts.contains("max-age="), "{hsts}");
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(res.text().await.unwrap().contains("Sign in"));

    // Plain HTTP to the HTTPS port gets no page.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("{}/login", bastion.console_url()))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP got a page from the HTTPS console"
    );
}

#[test]
fn a_disabled_console_does_not_listen() {
    // The same wait with the console on shows it listening and saying so, so the checks below
    // would see a console that started.
    let enabled = Bastion::new().unwrap();
    let _on = enabled.serve().unwrap();
    wait_for_port(enabled.console_addr(), Duration::from_secs(20)).unwrap();
    assert!(
        enabled.log().contains("console listening"),
        "{}",
        enabled.log()
    );

    let bastion = Bastion::with_env(&[("PGBASTION_CONSOLE_ENABLED", "false")]).unwrap();
    let _serve = bastion.serve().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!port_open(bastion.console_addr()));
    assert!(
        !bastion.log().contains("console listening"),
        "{}",
        bastion.log()
    );
}

#[test]
fn configurations_nobody_could_sign_in_with_are_refused_naming_the_setting() {
    let no_roles = Bastion::with_env(&[
        ("PGBASTION_OIDC_ISSUER_URL", "http://127.0.0.1:1/idp"),
        ("PGBASTION_OIDC_CLIENT_ID", "console"),
    ])
    .unwrap();
    let out = no_roles.cli(&["serve"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("oidc.user_groups"), "{err}");

    let nothing = Bastion::with_env(&[("PGBASTION_CONSOLE_LOCAL_LOGIN", "false")]).unwrap();
    let out = nothing.cli(&["serve"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("console.local_login"), "{err}");

    let bad_url = Bastion::with_env(&[("PGBASTION_CONSOLE_PUBLIC_URL", "ftp://x")]).unwrap();
    let err = String::from_utf8_lossy(&bad_url.cli(&["serve"]).unwrap().stderr).into_owned();
    assert!(err.contains("console.public_url"), "{err}");
}

#[test]
fn an_identity_provider_that_is_down_does_not_stop_the_console() {
    let bastion = Bastion::with_env(&[
        (
            "PGBASTION_OIDC_ISSUER_URL",
            "http://127.0.0.1:9/nobody-here",
        ),
        ("PGBASTION_OIDC_CLIENT_ID", "console"),
        ("PGBASTION_OIDC_USER_GROUPS", "dev"),
    ])
    .unwrap();
    let _serve: ChildGuard = bastion.serve().unwrap();
    wait_for_port(bastion.console_addr(), Duration::from_secs(20)).unwrap();
    assert!(
        bastion.log().contains("not reachable yet"),
        "{}",
        bastion.log()
    );
}

#[test]
fn local_accounts_are_added_with_roles_and_a_password_that_is_checked() {
    let bastion = Bastion::new().unwrap();
    let out = user_add(&bastion, &["root", "--admin"], None);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("roles admin"), "{stdout}");
    let generated = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .expect("a generated password");
    assert!(generated.len() >= 32, "{generated}");

    let again = user_add(&bastion, &["root"], Some("another long password"));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has a local account"));

    let short = user_add(&bastion, &["bob"], Some("short"));
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));

    let bad_role = user_add(
        &bastion,
        &["carol", "--role", "superuser"],
        Some("x".repeat(20).as_str()),
    );
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role 'superuser'"));

    let ok = user_add(
        &bastion,
        &["carol", "--role", "auditor", "--role", "approver"],
        Some("carol's long password"),
    );
    assert!(ok.status.success(), "{ok:?}");
    let list = bastion.cli_ok(&["user", "list"]).unwrap();
    assert!(list.contains("approver,auditor"), "{list}");
    assert!(list.contains("root") && list.contains("admin"), "{list}");
    // The command line's changes are audited too.
    let people = bastion.cli_ok(&["person", "list"]).unwrap();
    assert!(people.contains("carol"), "{people}");
}

/// A failed local sign-in posted with `X-Forwarded-For`; returns the address the audit log
/// records for it.
async fn audited_address(bastion: &Bastion) -> String {
    let _serve = bastion.serve().unwrap();
    wait_for_port(bastion.console_addr(), Duration::from_secs(20)).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client
        .get(format!("{}/login", bastion.console_url()))
        .send()
        .await
        .unwrap();
    let token = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("pgbastion_login="))
        .and_then(|c| c.split(';').next())
        .expect("a sign-in form token")
        .to_string();
    let res = client
        .post(format!("{}/login/local", bastion.console_url()))
        .header("cookie", format!("pgbastion_login={token}"))
        .header("x-forwarded-for", "198.51.100.7")
        .form(&[
            ("login_csrf", token.as_str()),
            ("login", "nobody"),
            ("password", "wrong password here"),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let store = gateway::store::open(&bastion.store_url()).await.unwrap();
    let audit = store.list_audit(None, 10).await.unwrap();
    let failed = audit
        .iter()
        .find(|e| e.action == "signin.failed")
        .expect("the failed sign-in is audited");
    failed.client_addr.clone().unwrap_or_default()
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let plain = Bastion::new().unwrap();
    assert_eq!(audited_address(&plain).await, "127.0.0.1");
    let proxied = Bastion::with_env(&[("PGBASTION_CONSOLE_TRUSTED_PROXIES", "127.0.0.1")]).unwrap();
    assert_eq!(audited_address(&proxied).await, "198.51.100.7");
}
