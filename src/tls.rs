//! TLS on the client listener: `[server.tls]` PEM files -> a rustls server config
//! (ring provider, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`).
//!
//! The files are read at start-up and again on every config reload; a reload whose
//! files do not load keeps the config (and certificate) already serving. The listener
//! reads the current config once per accepted connection ([`TlsSource`]), so a renewed
//! certificate applies to new connections while open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use crate::config::TlsFiles;

/// The client listener's current TLS config (`None`: plain HTTP), swapped on reload.
pub type TlsSource = Arc<ArcSwapOption<rustls::ServerConfig>>;

/// ALPN protocols offered, in preference order.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why the TLS files do not make a server config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.cert_file `{}`: {problem}; fix: name a readable PEM file with the certificate chain, leaf first", .path.display())]
    Cert { path: PathBuf, problem: String },
    #[error("server.tls.key_file `{}`: {problem}; fix: name a readable PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1)", .path.display())]
    Key { path: PathBuf, problem: String },
    #[error("server.tls: the certificate and key do not make a TLS config: {0}; fix: check that the key belongs to the certificate")]
    Config(#[source] rustls::Error),
}

/// Reads the certificate chain and key of `files` into a server config.
pub fn load(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = certificates(&files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::Key {
        path: files.key_file.clone(),
        problem: pem_problem(&e, "PRIVATE KEY"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |e: rustls_pki_types::pem::Error| TlsError::Cert {
        path: path.to_path_buf(),
        problem: pem_problem(&e, "CERTIFICATE"),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(problem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(problem)?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: path.to_path_buf(),
            problem: "no `-----BEGIN CERTIFICATE-----` block".into(),
        });
    }
    Ok(certs)
}

fn pem_problem(e: &rustls_pki_types::pem::Error, what: &str) -> String {
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("no `-----BEGIN {what}-----` block")
        }
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read the file: {io}"),
        other => format!("not a valid PEM file: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_key_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let files = TlsFiles {
            cert_file: dir.path().join("absent.pem"),
            key_file: empty.clone(),
        };
        let e = load(&files).unwrap_err().to_string();
        assert!(
            e.contains("server.tls.cert_file") && e.contains("cannot read"),
            "{e}"
        );
        let files = TlsFiles {
            cert_file: empty.clone(),
            key_file: empty,
        };
        let e = load(&files).unwrap_err().to_string();
        assert!(e.contains("no `-----BEGIN CERTIFICATE-----` block"), "{e}");
    }
}
