//! TLS on the client listener: HTTPS with ALPN h2 and http/1.1, certificates reloaded
//! with the config (a broken one keeps the old), the admin listener plain HTTP.

mod common;
mod ops_support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ops_support::{FileGateway, Upstream};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;

use common::http;

/// A self-signed certificate for `localhost`: (cert PEM, key PEM, cert DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (
        ck.cert.pem(),
        ck.key_pair.serialize_pem(),
        ck.cert.der().clone(),
    )
}

fn config(view: &Upstream) -> String {
    r#"
[server.tls]
cert_file = "@DIR@/cert.pem"
key_file = "@DIR@/key.pem"

[token]
secret_file = "@DIR@/k1.secret"

[upstreams.view]
url = "VIEW"

[projections.users]
logs = ["users"]

[[routes]]
name = "read-user"
kind = "read"
path = "/users/{id}"
upstream = "view"
projection = "users"
"#
    .replace("VIEW", &view.url())
}

/// A TLS client trusting `roots`, offering `alpn`.
fn client(roots: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(gw: &FileGateway, connector: &tokio_rustls::TlsConnector) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(gw.proxy).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// GET `path` over `tls` with the protocol ALPN chose: (status, body, protocol).
async fn get(tls: Tls, path: &str) -> (StatusCode, String, String) {
    let alpn = tls
        .get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let io = TokioIo::new(tls);
    let req = |uri: &str| {
        Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let resp = if alpn.as_deref() == Some("h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req(&format!("https://localhost{path}")))
            .await
            .unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req(path)).await.unwrap()
    };
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        alpn.unwrap_or_default(),
    )
}

fn peer_certificate(tls: &Tls) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn the_tls_listener_serves_h2_and_http1() {
    let view = Upstream::start("view").await;
    let (cert, key, der) = certificate();
    let gw = FileGateway::start_with_files(
        &config(&view),
        &[],
        &[("cert.pem", cert.as_bytes()), ("key.pem", key.as_bytes())],
    )
    .await;

    let tls = connect(&gw, &client(&[&der], &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    let (status, body, alpn) = get(tls, "/users/1").await;
    assert_eq!((status, alpn.as_str()), (StatusCode::OK, "h2"));
    assert!(body.contains("\"upstream\":\"view\""), "{body}");

    let tls = connect(&gw, &client(&[&der], &[b"http/1.1"]))
        .await
        .unwrap();
    let (status, _, alpn) = get(tls, "/users/1").await;
    assert_eq!((status, alpn.as_str()), (StatusCode::OK, "http/1.1"));

    // A client that does not trust the certificate fails the handshake.
    let (_, _, other) = certificate();
    assert!(connect(&gw, &client(&[&other], &[b"http/1.1"]))
        .await
        .is_err());

    // The admin listener stays plain HTTP.
    let health = http().get(&gw.admin_url("/healthz"), &[]).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn certificates_reload_with_the_config_and_a_broken_one_keeps_the_old() {
    let view = Upstream::start("view").await;
    let (cert1, key1, der1) = certificate();
    let (cert2, key2, der2) = certificate();
    let gw = FileGateway::start_with_files(
        &config(&view),
        &[],
        &[("cert.pem", cert1.as_bytes()), ("key.pem", key1.as_bytes())],
    )
    .await;
    let trust_both = client(&[&der1, &der2], &[b"http/1.1"]);
    let held = connect(&gw, &trust_both).await.unwrap();
    assert_eq!(peer_certificate(&held), der1);

    // Renewed files: new connections get the new certificate.
    std::fs::write(gw.file("cert.pem"), &cert2).unwrap();
    std::fs::write(gw.file("key.pem"), &key2).unwrap();
    let r = http()
        .send(Method::POST, &gw.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let tls = connect(&gw, &trust_both).await.unwrap();
    assert_eq!(peer_certificate(&tls), der2);
    // A connection opened before the reload keeps serving.
    assert_eq!(get(held, "/users/1").await.0, StatusCode::OK);

    // A broken certificate file: refused, the current certificate keeps serving.
    std::fs::write(
        gw.file("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .unwrap();
    let r = http()
        .send(Method::POST, &gw.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("server.tls.cert_file"), "{}", r.text());
    // A key that does not match the certificate: refused too.
    std::fs::write(gw.file("cert.pem"), &cert1).unwrap();
    let r = http()
        .send(Method::POST, &gw.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let tls = connect(&gw, &trust_both).await.unwrap();
    assert_eq!(peer_certificate(&tls), der2);
    assert_eq!(get(tls, "/users/1").await.0, StatusCode::OK);
}
