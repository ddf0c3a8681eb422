//! The coordinator's TLS identity: the operator's certificate and key, or a
//! self-signed pair made on first start under `<data-dir>/tls/`, and the
//! SHA-256 pin of the certificate's DER form that agents check.
//!
//! Never: overwrite an existing key, leave the key readable by others, or
//! write the key anywhere but its file.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use crate::config::{Config, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no {what} in PEM form")]
    Pem { path: PathBuf, what: &'static str },
    #[error("making the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS server: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What `serve --tls` serves with.
pub struct TlsIdentity {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// SHA-256 of the certificate's DER form, 64 lowercase hex digits.
    pub sha256: String,
    pub cert_path: PathBuf,
    /// Whether this start made the certificate.
    pub made: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The SHA-256 pin of a certificate's DER form.
pub fn pin(der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(der))
}

/// Loads (or makes, the first time) the identity and writes its pin to
/// `<data-dir>/tls/cert.sha256`.
pub fn load_or_make(config: &Config, tls: &TlsConfig) -> Result<TlsIdentity, TlsError> {
    let dir = config.data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let (cert_path, key_path, made) = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), false),
        _ => {
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let made = !cert.exists();
            if made {
                make_self_signed(&cert, &key, &sans(config.listen.ip(), &tls.sans))?;
            }
            (cert, key, made)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|_| TlsError::Pem {
            path: cert_path.clone(),
            what: "certificate",
        })?
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem {
            path: cert_path.clone(),
            what: "certificate",
        })?;
    let first = certs.first().ok_or_else(|| TlsError::Pem {
        path: cert_path.clone(),
        what: "certificate",
    })?;
    let sha256 = pin(first);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|_| TlsError::Pem {
        path: key_path.clone(),
        what: "private key",
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let pin_path = dir.join("cert.sha256");
    std::fs::write(&pin_path, format!("{sha256}\n")).map_err(io(&pin_path))?;
    Ok(TlsIdentity {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        sha256,
        cert_path,
        made,
    })
}

/// The names the certificate answers to: the listen address, each
/// `--tls-san`, and, listening on every address, this host's addresses and
/// hostname.
fn sans(listen: IpAddr, extra: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    if listen.is_unspecified() {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let ip = a.address.and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                });
                if let Some(ip) = ip {
                    names.push(ip.to_string());
                }
            }
        }
        if let Ok(h) = nix::unistd::gethostname() {
            if let Some(h) = h.to_str().filter(|h| !h.is_empty()) {
                names.push(h.to_string());
            }
        }
    } else {
        names.push(listen.to_string());
    }
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

fn make_self_signed(cert: &Path, key: &Path, sans: &[String]) -> Result<(), TlsError> {
    let made = rcgen::generate_simple_self_signed(sans.to_vec())?;
    // The key first, 0600 from its creation; never over an existing one.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .map_err(io(key))?;
    f.write_all(made.signing_key.serialize_pem().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(key))?;
    let tmp = cert.with_extension("pem.tmp");
    std::fs::write(&tmp, made.cert.pem()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, cert).map_err(io(cert))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_address_names_itself_and_the_extra_names() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            sans(ip, &["vet.lab".into(), "192.0.2.7".into()]),
            vec!["192.0.2.7".to_string(), "vet.lab".to_string()]
        );
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let all = sans(any, &[]);
        assert!(all.contains(&"127.0.0.1".to_string()), "{all:?}");
    }
}
