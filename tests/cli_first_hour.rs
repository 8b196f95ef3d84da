//! The command line as a new user meets it, through the built binary: `check` fails
//! wherever `run` would (a short secret), refuses another router's path syntax with
//! the braced form, warns about a write route's `default_log` no projection consumes;
//! environment overrides with the shell-friendly `_` spelling work and a misspelled
//! one is an error with a "did you mean"; `token inspect` exits non-zero on a token
//! that does not verify or is no JWT; `demo` on a busy port names it and the flag.

#[path = "support/binary.rs"]
mod binary;

use std::path::Path;
use std::process::Output;

use binary::{output, tidemark};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// A small valid config with `extra` appended to its write route.
fn config(dir: &Path, path: &str, default_log: &str) -> std::path::PathBuf {
    let file = dir.join("tidemark.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[upstreams.item-commands]
url = "http://127.0.0.1:7001"
[upstreams.item-view]
url = "http://127.0.0.1:7002"
[projections.items]
logs = ["items"]
[[routes]]
name = "write-item"
kind = "write"
path = "{path}"
upstream = "item-commands"
default_log = "{default_log}"
[[routes]]
name = "read-item"
kind = "read"
path = "/items/{{id}}"
upstream = "item-view"
projection = "items"
"#
        ),
    )
    .unwrap();
    file
}

fn check(file: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = tidemark();
    cmd.args(["check", "--config"]).arg(file);
    cmd.env("TIDEMARK_SECRET", SECRET);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output(&mut cmd)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_fails_where_run_would_refuse_a_short_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "/items/{id}", "items");
    let ok = check(&file, &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    let short = check(&file, &[("TIDEMARK_SECRET", "too-short")]);
    assert_eq!(short.status.code(), Some(2), "{}", stderr(&short));
    assert!(
        stderr(&short).contains("at least 32 bytes"),
        "{}",
        stderr(&short)
    );

    // `run` refuses the same config, with the same message.
    let mut run = tidemark();
    run.args(["run", "--config"]).arg(&file);
    run.env("TIDEMARK_SECRET", "too-short");
    let refused = output(&mut run);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let first = |s: &str| {
        s.lines()
            .find(|l| l.contains("at least 32 bytes"))
            .map(str::trim)
            .map(str::to_string)
    };
    assert_eq!(first(&stderr(&short)), first(&stderr(&refused)));
}

#[test]
fn check_fails_on_tls_files_that_do_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "/items/{id}", "items");
    let mut text = std::fs::read_to_string(&file).unwrap();
    let missing = dir.path().join("missing.pem");
    text = text.replacen(
        "[upstreams.item-commands]",
        &format!(
            "[server.tls]\ncert_file = \"{0}\"\nkey_file = \"{0}\"\n[upstreams.item-commands]",
            missing.display()
        ),
        1,
    );
    std::fs::write(&file, text).unwrap();
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.pem"), "{}", stderr(&out));
}

#[test]
fn check_refuses_colon_captures_with_the_braced_form() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "/items/:id", "items");
    let out = check(&file, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("routes[0]") && err.contains(".path"), "{err}");
    assert!(err.contains("`/items/{id}`"), "{err}");
}

#[test]
fn check_warns_about_a_default_log_no_projection_consumes() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "/items/{id}", "item");
    let out = check(&file, &[]);
    assert!(
        out.status.success(),
        "a warning, not an error: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("warning: routes[0] (write-item).default_log")
            && err.contains("no projection consumes log `item`")
            && err.contains("did you mean `items`?"),
        "{err}"
    );
}

#[test]
fn overrides_take_underscores_for_dashes_and_refuse_misspelled_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "/items/{id}", "items");
    let ok = check(
        &file,
        &[(
            "TIDEMARK__UPSTREAMS__ITEM_VIEW__URL",
            "http://127.0.0.1:7999",
        )],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    // The `_` spelling reaches `upstreams.item-view` (a bad value is traced there).
    let bad = check(
        &file,
        &[("TIDEMARK__UPSTREAMS__ITEM_VIEW__URL", "not a url")],
    );
    assert_eq!(bad.status.code(), Some(2));
    let err = stderr(&bad);
    assert!(
        err.contains("upstreams.item-view.url")
            && err.contains("(set by `TIDEMARK__UPSTREAMS__ITEM_VIEW__URL`)"),
        "{err}"
    );

    let typo = check(
        &file,
        &[(
            "TIDEMARK__UPSTREAMS__ITEM-VEIW__URL",
            "http://127.0.0.1:7999",
        )],
    );
    assert_eq!(typo.status.code(), Some(2), "{}", stderr(&typo));
    let err = stderr(&typo);
    assert!(
        err.contains("TIDEMARK__UPSTREAMS__ITEM-VEIW__URL")
            && err.contains("no upstream `item-veiw`")
            && err.contains("did you mean `item-view`?"),
        "{err}"
    );
}

#[test]
fn token_inspect_exits_non_zero_unless_the_token_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "/items/{id}", "items");
    let inspect = |token: &str, secret: &str, with_config: bool| {
        let mut cmd = tidemark();
        cmd.args(["token", "inspect", token]);
        if with_config {
            cmd.arg("--config").arg(&file);
        }
        cmd.env("TIDEMARK_SECRET", secret);
        output(&mut cmd)
    };
    let garbage = inspect("not-a-token", SECRET, false);
    assert_eq!(garbage.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&garbage.stdout).contains("not a JWT"));

    // A token minted with SECRET (what a gateway configured with it would hand out).
    let config =
        tidemark::config::Config::from_toml(&std::fs::read_to_string(&file).unwrap(), None, &[])
            .unwrap();
    let mut token_config = config.token.clone();
    token_config.signing.material = tidemark::config::KeyMaterial::Inline(SECRET.into());
    let ring = tidemark::token::KeyRing::from_config(&token_config).unwrap();
    let pos = tidemark::position::PositionVector::parse("items=42", None).unwrap();
    let token = ring.mint("session-1", &pos, std::time::SystemTime::now());

    let good = inspect(&token, SECRET, true);
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    assert!(String::from_utf8_lossy(&good.stdout).contains("verified with key"));
    let decoded = inspect(&token, SECRET, false);
    assert_eq!(
        decoded.status.code(),
        Some(0),
        "decode only without --config"
    );
    let other = inspect(&token, "another-secret-of-at-least-32-bytes!!", true);
    assert_eq!(other.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other.stdout).contains("NOT verified"));
}

#[test]
fn demo_on_a_busy_port_names_the_address_and_the_flag() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = output(tidemark().args([
        "demo",
        "--once",
        "--admin-listen",
        "127.0.0.1:0",
        "--listen",
        &addr,
    ]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&addr) && err.contains("--listen"), "{err}");

    let out = output(tidemark().args(["demo", "--once", "--admin-listen", &addr]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&addr) && err.contains("--admin-listen"),
        "{err}"
    );
    drop(busy);
}
