//! HTTPS on the shards: rustls with the ring provider, TLS 1.3 and 1.2,
//! ALPN `http/1.1`. The server configuration is swapped whole when the
//! certificates are reloaded (`SIGHUP`); a connection keeps the one it
//! started with, so a reload drops none.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use engine_core::config::TlsConfig;
use monoio_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

/// Sessions one shard set remembers for resumption (TLS 1.2 ids, 1.3 tickets
/// are stateless). Bounds the cache's memory: about 200 bytes each.
pub const SESSION_CACHE_ENTRIES: usize = 4096;

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_path and tls.key_path must both be set")]
    NotConfigured,
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("{}: no certificate in the file", .0.display())]
    NoCertificate(PathBuf),
    #[error("the certificate and key do not make a TLS server: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The loaded certificate chain, as the log names it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// SHA-256 of the server's certificate (DER), hex.
    pub fingerprint: String,
    /// Certificates in the chain.
    pub chain: usize,
}

fn pem_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A rustls server from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<(ServerConfig, Loaded), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(cert, e))?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    };
    let loaded = Loaded {
        fingerprint: hex_string(&Sha256::digest(leaf.as_ref())),
        chain: certs.len(),
    };
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok((config, loaded))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The edge's TLS server, replaceable while it runs.
#[derive(Debug)]
pub struct Tls {
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Loads the configured certificate and key.
    pub fn load(config: &TlsConfig) -> Result<(Tls, Loaded), TlsError> {
        let (server, loaded) = Self::read(config)?;
        Ok((
            Tls {
                current: ArcSwap::from_pointee(server),
            },
            loaded,
        ))
    }

    fn read(config: &TlsConfig) -> Result<(ServerConfig, Loaded), TlsError> {
        match (&config.cert_path, &config.key_path) {
            (Some(cert), Some(key)) => server_config(cert, key),
            _ => Err(TlsError::NotConfigured),
        }
    }

    /// Reads the files again; on error the running certificates stay.
    pub fn reload(&self, config: &TlsConfig) -> Result<Loaded, TlsError> {
        let (server, loaded) = Self::read(config)?;
        self.current.store(Arc::new(server));
        Ok(loaded)
    }

    /// An acceptor with the certificates in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }
}
