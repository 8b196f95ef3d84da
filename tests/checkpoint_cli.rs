//! `tidemark checkpoint push` against a running gateway: the built binary's exit codes
//! and messages, and the library function's typed errors.

mod common;

use std::process::{Command, Output};

use common::{closed_port, config, http, TestGateway};
use tidemark::cli_checkpoint::{push, CheckpointPush, PushError};

const ADMIN_TOKEN: &str = "admin-s3cret";

async fn gateway() -> TestGateway {
    let toml = format!(
        r#"
[admin]
token_env = "ADMIN_TOKEN"
[upstreams.view]
instances = {{ r0 = "http://127.0.0.1:{port}", r1 = "http://127.0.0.1:{port}" }}
[projections.users]
logs = ["users"]
sources = ["push"]
[projections.orders]
logs = ["orders", "users"]
sources = ["push"]
[[routes]]
name = "read-user"
kind = "read"
path = "/users/{{id}}"
upstream = "view"
projection = "users"
[[routes]]
name = "read-order"
kind = "read"
path = "/orders/{{id}}"
upstream = "view"
projection = "orders"
"#,
        port = closed_port()
    );
    TestGateway::start(config(&toml, &[("ADMIN_TOKEN", ADMIN_TOKEN.to_owned())])).await
}

/// The checkpoint of `projection`'s `instance` from `GET /projections`.
async fn checkpoint(gw: &TestGateway, projection: &str, instance: &str) -> serde_json::Value {
    let r = http().get(&gw.admin_url("/projections"), &[]).await;
    r.json()["projections"][projection]["instances"][instance]["checkpoint"].clone()
}

/// Runs the built `tidemark checkpoint push` with `args` (the admin token in
/// `ADMIN_TOKEN_VAR`), off the async runtime.
async fn run_cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["checkpoint", "push"])
            .args(&args)
            .env("ADMIN_TOKEN_VAR", ADMIN_TOKEN)
            .env_remove("UNSET_TOKEN_VAR")
            .output()
            .expect("run tidemark")
    })
    .await
    .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_binary_pushes_and_exits_zero_or_says_why_not() {
    let gw = gateway().await;
    let admin = format!("http://{}", gw.admin);

    // A bare number for a one-log projection, one instance.
    let ok = run_cli(args(&[
        "--admin",
        &admin,
        "--projection",
        "users",
        "--instance",
        "r1",
        "--token-env",
        "ADMIN_TOKEN_VAR",
        "42",
    ]))
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        checkpoint(&gw, "users", "r1").await,
        serde_json::json!({"users": 42})
    );
    assert_eq!(checkpoint(&gw, "users", "r0").await, serde_json::json!({}));

    // The text form, every instance.
    let ok = run_cli(args(&[
        "--admin",
        &admin,
        "--projection",
        "orders",
        "--token-env",
        "ADMIN_TOKEN_VAR",
        "orders=7, users=9",
    ]))
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for instance in ["r0", "r1"] {
        assert_eq!(
            checkpoint(&gw, "orders", instance).await,
            serde_json::json!({"orders": 7, "users": 9})
        );
    }

    // Failures: non-zero exit and a message naming the problem.
    let cases: [(Vec<String>, &str); 5] = [
        (
            args(&["--admin", &admin, "--projection", "users", "43"]),
            "401",
        ),
        (
            args(&[
                "--admin",
                &admin,
                "--projection",
                "nope",
                "--token-env",
                "ADMIN_TOKEN_VAR",
                "1",
            ]),
            "no projection named \"nope\"",
        ),
        (
            args(&[
                "--admin",
                &admin,
                "--projection",
                "orders",
                "--token-env",
                "ADMIN_TOKEN_VAR",
                "5",
            ]),
            "400",
        ),
        (
            args(&[
                "--admin",
                &admin,
                "--projection",
                "users",
                "--token-env",
                "UNSET_TOKEN_VAR",
                "1",
            ]),
            "UNSET_TOKEN_VAR",
        ),
        (
            args(&[
                "--admin",
                &format!("http://127.0.0.1:{}", closed_port()),
                "--projection",
                "users",
                "1",
            ]),
            "cannot reach the admin API",
        ),
    ];
    for (case, expected) in cases {
        let out = run_cli(case.clone()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case:?} must fail");
        assert!(stderr.contains(expected), "{case:?}: {stderr}");
    }
    assert_eq!(
        checkpoint(&gw, "users", "r1").await,
        serde_json::json!({"users": 42}),
        "failed pushes changed nothing"
    );
}

#[tokio::test]
async fn the_library_function_returns_typed_errors() {
    let gw = gateway().await;
    let request = |position: &str, token: Option<&str>| CheckpointPush {
        admin: gw.admin.to_string(),
        projection: "users".into(),
        instance: Some("r0".into()),
        token: token.map(str::to_owned),
        position: position.into(),
    };
    push(&request("users=5", Some(ADMIN_TOKEN)))
        .await
        .expect("push succeeds");
    assert_eq!(
        checkpoint(&gw, "users", "r0").await,
        serde_json::json!({"users": 5})
    );

    match push(&request("users=x", Some(ADMIN_TOKEN))).await {
        Err(PushError::Rejected { status, detail }) => {
            assert_eq!(status, 400);
            assert!(
                detail.contains("users=x") || detail.contains("bad checkpoint"),
                "{detail}"
            );
        }
        other => panic!("expected a 400 rejection, got {other:?}"),
    }
    assert!(matches!(
        push(&request("users=6", Some("wrong"))).await,
        Err(PushError::Rejected { status, .. }) if status == 401
    ));
    assert!(matches!(
        push(&request("  ", Some(ADMIN_TOKEN))).await,
        Err(PushError::EmptyPosition)
    ));
}
