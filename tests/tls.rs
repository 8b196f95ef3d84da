//! TLS on the client listener: HTTPS with ALPN h2 and http/1.1, certificates reloaded
//! with the config (a broken one keeps the old), the admin listener plain HTTP,
//! `X-Forwarded-Proto: https`, silent clients after the handshake; and TLS to
//! `https://` upstreams (a CA file, SNI from the URL's host).

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

#[tokio::test]
async fn requests_over_tls_are_forwarded_with_x_forwarded_proto_https() {
    let view = Upstream::start("view").await;
    let (cert, key, der) = certificate();
    let gw = FileGateway::start_with_files(
        &config(&view),
        &[],
        &[("cert.pem", cert.as_bytes()), ("key.pem", key.as_bytes())],
    )
    .await;
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let tls = connect(&gw, &client(&[&der], &[alpn])).await.unwrap();
        let (status, body, _) = get(tls, "/users/1").await;
        assert_eq!(status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["forwarded_proto"], "https", "{body}");
    }
}

#[tokio::test]
async fn a_client_silent_after_the_tls_handshake_is_closed_after_header_read_timeout() {
    let view = Upstream::start("view").await;
    let (cert, key, der) = certificate();
    let gw = FileGateway::start_with_files(
        &config(&view),
        &[("TIDEMARK__SERVER__HEADER_READ_TIMEOUT", "300ms")],
        &[("cert.pem", cert.as_bytes()), ("key.pem", key.as_bytes())],
    )
    .await;
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut tls = connect(&gw, &client(&[&der], &[alpn])).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
        )
        .await
        .expect("the silent connection is closed within 5 s");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "closed without an answer: {read:?}"
        );
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    }
}

/// A TLS upstream on 127.0.0.1 with `cert`/`key` (HTTP/1.1), answering
/// `{"tls": true, "sni": <the name the client asked for>}`.
async fn tls_upstream(cert: &str, key: &str) -> std::net::SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let body =
                            serde_json::json!({"tls": true, "sni": sni, "path": req.uri().path()});
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from(body.to_string())),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn https_upstream_config(port: u16, ca_file: &str) -> String {
    format!(
        r#"
[token]
secret_file = "@DIR@/k1.secret"

[upstreams.secure]
url = "https://localhost:{port}"
{ca_file}

[[routes]]
name = "all"
kind = "passthrough"
path = "/{{*rest}}"
upstream = "secure"
"#
    )
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_ca_file_with_sni() {
    let (cert, key, _) = certificate();
    let up = tls_upstream(&cert, &key).await;
    let gw = FileGateway::start_with_files(
        &https_upstream_config(up.port(), "ca_file = \"@DIR@/ca.pem\""),
        &[],
        &[("ca.pem", cert.as_bytes())],
    )
    .await;
    let r = http().get(&gw.url("/items/1"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["tls"], true);
    assert_eq!(r.json()["sni"], "localhost");
    assert_eq!(r.json()["path"], "/items/1");
}

#[tokio::test]
async fn an_https_upstream_with_an_untrusted_certificate_is_a_502_naming_the_instance() {
    let (cert, key, _) = certificate();
    let up = tls_upstream(&cert, &key).await;
    // Trusted: only the system's roots (and a CA that did not sign the upstream's).
    let (other, _, _) = certificate();
    let gw = FileGateway::start_with_files(
        &https_upstream_config(up.port(), "ca_file = \"@DIR@/ca.pem\""),
        &[],
        &[("ca.pem", other.as_bytes())],
    )
    .await;
    let r = http().get(&gw.url("/items/1"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("\"secure\"") && detail.contains("instance \"default\""),
        "{detail}"
    );
}
