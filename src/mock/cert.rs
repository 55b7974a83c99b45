//! The CA and server certificate the mock exchange makes at every start.
//!
//! Runs once on the starting thread. The private keys live only in memory
//! and are never written to disk; only the CA certificate is.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A fresh CA and a server certificate it signed, valid for `localhost` and
/// `127.0.0.1`.
pub struct Certificates {
    /// PEM of the CA certificate, for clients to trust.
    pub ca_pem: String,
    /// TLS configuration presenting the server certificate.
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Makes a new CA and server certificate and the rustls configuration that
/// serves them.
pub fn generate() -> Result<Certificates, String> {
    let ca_key = KeyPair::generate().map_err(|error| format!("failed to make CA key: {error}"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())
        .map_err(|error| format!("invalid CA parameters: {error}"))?;
    ca_params.distinguished_name.push(DnType::CommonName, "binance-ingest mock exchange CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|error| format!("failed to sign CA certificate: {error}"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key =
        KeyPair::generate().map_err(|error| format!("failed to make server key: {error}"))?;
    let mut server_params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|error| format!("invalid server certificate parameters: {error}"))?;
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(|error| format!("failed to sign server certificate: {error}"))?;

    let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("failed to configure TLS versions: {error}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("failed to configure server certificate: {error}"))?;

    Ok(Certificates { ca_pem: ca_cert.pem(), server_config: Arc::new(server_config) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_ca() {
        let certificates = generate().unwrap();
        assert!(certificates.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let second = generate().unwrap();
        assert_ne!(certificates.ca_pem, second.ca_pem);
    }
}
