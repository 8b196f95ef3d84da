//! TLS to `https://` upstream instances: rustls (ring provider, TLS 1.2 and 1.3),
//! trusting the system's roots plus the upstream's `ca_file`, SNI from the URL's
//! host, ALPN `http/1.1` (the upstream client speaks HTTP/1.1).
//!
//! System roots come from `rustls-native-certs` (the OS trust store: the CAs an
//! operator installed system-wide, and the distribution's updates, apply without a
//! new gateway build), read once per process, when the first `https://` upstream is
//! built. A store that cannot be read leaves only the `ca_file` roots (logged).

use std::sync::{Arc, OnceLock};

use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls;

/// The client config of an upstream whose instances use `https://`, trusting the
/// system's roots and `extra` (its `ca_file`'s certificates).
pub fn client_config(
    upstream: &str,
    extra: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
    tracing::debug!(upstream, added, ignored, "system roots loaded");
    for cert in extra {
        if let Err(e) = roots.add(cert.clone()) {
            tracing::warn!(upstream, error = %e, "a ca_file certificate is not a usable root; skipped");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The OS trust store, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "cannot read the system's trusted CA certificates; only ca_file roots apply");
        }
        loaded.certs
    })
}
