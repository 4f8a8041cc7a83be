//! TLS for `rediss://` connections (feature `tls`): rustls through redis-rs.

use std::fmt;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;

/// Certificates for `rediss://` connections: a CA to trust instead of the
/// system's roots, and a client certificate for mutual TLS.
///
/// Without [`CacheBuilder::tls`](crate::CacheBuilder::tls), a `rediss://` URL
/// is verified against the system's roots. Verification is skipped only when
/// the URL asks for it with `#insecure` (`rediss://host:6380/#insecure`).
///
/// ```no_run
/// use cache_runtime::{Cache, Tls};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = Cache::builder()
///     .redis("rediss://cache.internal:6380/")
///     .tls(
///         Tls::new()
///             .ca_pem(std::fs::read("ca.crt")?)
///             .client_pem(std::fs::read("client.crt")?, std::fs::read("client.key")?),
///     )
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Tls {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Tls {
    /// No certificates: the system's roots, no client certificate.
    pub fn new() -> Self {
        Tls::default()
    }

    /// Trusts the CA certificates in `pem` (one or more PEM blocks) instead
    /// of the system's roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// Presents a client certificate (mutual TLS): its chain and its private
    /// key, in PEM.
    pub fn client_pem(mut self, certificate: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client = Some((certificate.into(), key.into()));
        self
    }

    /// Refuses PEM that holds no certificate or key, which would otherwise
    /// surface only as failed handshakes.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(ca) = &self.ca {
            certificates_in(ca, "the CA")?;
        }
        if let Some((certificate, key)) = &self.client {
            certificates_in(certificate, "the client certificate")?;
            PrivateKeyDer::from_pem_slice(key).map_err(|error| {
                Error::Config(format!("the client key is not a PEM private key: {error}"))
            })?;
        }
        Ok(())
    }

    /// redis-rs's form of these certificates.
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(certificate, key)| redis::ClientTlsConfig {
                    client_cert: certificate.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Certificates are public, but keys are not: print only what is set.
        f.debug_struct("Tls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Makes rustls's `ring` provider the process default, unless the
/// application has installed one: redis-rs builds its configs on the default.
///
/// rustls 0.23.48 deprecated that provider for having no post-quantum key
/// exchange, and offers none in its place but aws-lc-rs, which needs more
/// than a C compiler to build. The cache keeps `ring` so that `tls` builds
/// anywhere; an application that wants post-quantum key exchange installs
/// its provider (`rustls::crypto::aws_lc_rs::default_provider()`) before it
/// builds the cache, and that one is used.
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        #[allow(deprecated)] // see above: chosen, and said in the docs
        let ring = rustls::crypto::ring::default_provider();
        // Losing a race to another installer is fine: there is a default.
        let _ = ring.install_default();
    }
}

/// Checks that `pem` holds at least one certificate.
fn certificates_in(pem: &[u8], what: &str) -> Result<(), Error> {
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|error| Error::Config(format!("{what} is not valid PEM: {error}")))?;
        count += 1;
    }
    match count {
        0 => Err(Error::Config(format!("{what} holds no PEM certificate"))),
        _ => Ok(()),
    }
}
