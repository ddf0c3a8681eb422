//! Whom the agent trusts to be its coordinator over HTTPS: the system's
//! roots, one CA file (`--ca-file`), or one certificate by the SHA-256 of
//! its DER form (`--ca-sha256`, `vet.ca_sha256=`: what `vet-coordinator
//! serve --tls` writes to `tls/cert.sha256`).
//!
//! Never: send a byte of a request (MACs included) to a server whose
//! certificate failed the check, accept a pinned certificate without its
//! handshake signature, or log anything secret.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The agent's trust in its coordinator's certificate.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// The system's root certificates (and plain HTTP where the URL says so).
    #[default]
    System,
    /// Only this certificate, by the SHA-256 of its DER form.
    Pin([u8; 32]),
    /// Only certificates that chain to these PEM roots.
    CaFile(Vec<u8>),
}

impl Trust {
    /// A pin from 64 hex digits (either case; `:` separators allowed).
    pub fn pin(hex_digits: &str) -> Result<Trust, String> {
        let clean: String = hex_digits.chars().filter(|c| *c != ':').collect();
        let bytes = hex_to_bytes(&clean).ok_or_else(|| {
            format!("{hex_digits:?} is not a SHA-256 pin: want 64 hex digits (cert.sha256)")
        })?;
        Ok(Trust::Pin(bytes))
    }
}

fn hex_to_bytes(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The certificate a pinned check refused last: its SHA-256, for the one
/// line the agent prints.
pub type Refused = Arc<Mutex<Option<String>>>;

/// Accepts exactly the pinned certificate, whatever its names or issuer,
/// and still checks that the server holds its key (handshake signatures).
#[derive(Debug)]
pub struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    refused: Refused,
}

impl PinVerifier {
    pub fn new(pin: [u8; 32], provider: Arc<CryptoProvider>, refused: Refused) -> Self {
        Self {
            pin,
            provider,
            refused,
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = sha256(end_entity.as_ref());
        if got == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let got = to_hex(&got);
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(got.clone());
        Err(rustls::Error::General(format!(
            "certificate SHA-256 {got} is not the pinned {}",
            to_hex(&self.pin)
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// A rustls client configuration that trusts only `pin`.
pub fn pinned_config(pin: [u8; 32], refused: Refused) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = PinVerifier::new(pin, provider.clone(), refused);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_64_hex_digits() {
        let hex = "ab".repeat(32);
        assert!(matches!(Trust::pin(&hex), Ok(Trust::Pin(p)) if p == [0xab; 32]));
        assert!(Trust::pin(&hex.to_uppercase()).is_ok());
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        assert!(Trust::pin(&colons.join(":")).is_ok());
        for bad in [
            "",
            "abc",
            &"zz".repeat(32),
            &"ab".repeat(33),
            &"é".repeat(32),
        ] {
            assert!(Trust::pin(bad).is_err(), "{bad}");
        }
    }
}
