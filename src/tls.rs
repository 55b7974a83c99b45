//! TLS client configuration, and plain words for certificate failures.
//!
//! Certificates are always verified: against the Mozilla roots that
//! webpki-roots embeds, plus the CA certificates of the operator's CA file
//! when one is configured. There is no option to turn verification off.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::error::Error;

/// Builds the client configuration used by every connection.
///
/// # Errors
///
/// Fails when the CA file cannot be read, holds no certificate, or holds a
/// certificate that is not a valid trust anchor.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());

    if let Some(path) = ca_file {
        let added = add_ca_file(&mut roots, path)?;
        log::info!("trusting {added} extra CA certificate(s) from {}", path.display());
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Tls(format!("no usable TLS protocol version: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, Error> {
    let file_error =
        |source: io::Error| Error::File { action: "read CA file", path: path.into(), source };
    let bytes = std::fs::read(path).map_err(file_error)?;

    let mut added = 0;
    for (index, certificate) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let certificate = certificate.map_err(|error| {
            Error::Tls(format!(
                "invalid PEM in CA file {} (certificate {}): {error}",
                path.display(),
                index + 1
            ))
        })?;
        roots.add(certificate).map_err(|error| {
            Error::Tls(format!(
                "certificate {} in CA file {} is not a usable CA certificate: {error}",
                index + 1,
                path.display()
            ))
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(Error::Tls(format!(
            "CA file {} contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(added)
}

/// Short, stable label of a TLS failure for metrics (`reason` label).
pub fn failure_label(error: &rustls::Error) -> &'static str {
    match error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::UnknownIssuer => "unknown_issuer",
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "name_mismatch"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::BadSignature => "bad_signature",
            _ => "invalid_certificate",
        },
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::InvalidMessage(_) => "invalid_message",
        rustls::Error::NoCertificatesPresented => "no_certificate",
        _ => "other",
    }
}

/// Explains a TLS failure in plain words for the log.
pub fn describe_failure(error: &rustls::Error, host: &str) -> String {
    match error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the certificate of {host} has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the certificate of {host} is not valid yet; check the system clock")
            }
            CertificateError::UnknownIssuer => format!(
                "the certificate of {host} was issued by an unknown CA; a TLS-intercepting proxy \
                 needs its CA in BINANCE_INGEST_CA_FILE"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the certificate presented by {host} is issued for a different name")
            }
            CertificateError::BadSignature => format!(
                "the certificate of {host} carries a signature that no trusted CA made; a trusted \
                 CA may share its name with the one that issued it"
            ),
            other => format!("the certificate of {host} was rejected: {other:?}"),
        },
        other => format!("TLS handshake with {host} failed: {other}"),
    }
}

/// Finds the rustls error inside an I/O error, where rustls's stream
/// adapters put it.
pub fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_names_the_path() {
        let error = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("/nonexistent/ca.pem"), "{message}");
        assert!(message.contains("read CA file"), "{message}");
    }

    #[test]
    fn ca_file_without_certificate_is_rejected() {
        let path =
            std::env::temp_dir().join(format!("binance-ingest-empty-ca-{}", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let message = client_config(Some(&path)).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(message.contains("contains no PEM certificate"), "{message}");
    }

    #[test]
    fn failures_get_plain_labels() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(failure_label(&unknown), "unknown_issuer");
        assert!(describe_failure(&unknown, "example.test").contains("unknown CA"));
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(failure_label(&expired), "expired");
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(describe_failure(&name, "h").contains("different name"));
    }

    #[test]
    fn default_config_builds() {
        assert!(client_config(None).is_ok());
    }
}
