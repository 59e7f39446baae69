//! Which certificate authorities `https://` endpoints are checked against, decided once
//! per process the way curl and Python do it:
//!
//! 1. `SSL_CERT_FILE` / `SSL_CERT_DIR`, when set (a private CA, a corporate proxy, a
//!    test server's self-signed certificate);
//! 2. otherwise the system's store (`/etc/ssl/certs` and friends on Linux, the
//!    keychain on macOS);
//! 3. otherwise (a bare container without `ca-certificates`) the Mozilla roots bundled
//!    in the binary (`webpki-roots`).
//!
//! The HTTP clients of the remote backend use exactly this set, so `seqit doctor` can
//! say which one is in effect.

use std::sync::OnceLock;

use serde::Serialize;

/// The trusted roots and where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct TlsRoots {
    /// `SSL_CERT_FILE=…`, `system store` or `bundled webpki roots`; `none` without TLS.
    pub source: String,
    /// Number of trusted root certificates loaded.
    pub certificates: usize,
    /// Certificates that could not be read (from the chosen source).
    pub errors: Vec<String>,
    #[serde(skip)]
    #[cfg(feature = "https")]
    der: Vec<Vec<u8>>,
}

static ROOTS: OnceLock<TlsRoots> = OnceLock::new();

/// The roots in effect for this process (loaded on first use).
pub fn tls_roots() -> &'static TlsRoots {
    ROOTS.get_or_init(load)
}

#[cfg(not(feature = "https"))]
fn load() -> TlsRoots {
    TlsRoots {
        source: "none (built without TLS)".into(),
        certificates: 0,
        errors: Vec::new(),
    }
}

#[cfg(feature = "https")]
fn load() -> TlsRoots {
    let from_env = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .filter_map(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{name}={}", v.to_string_lossy()))
        })
        .collect::<Vec<_>>();
    // rustls-native-certs reads SSL_CERT_FILE/SSL_CERT_DIR instead of the system store
    // when they are set.
    let native = rustls_native_certs::load_native_certs();
    let errors: Vec<String> = native.errors.iter().map(|e| e.to_string()).collect();
    let der: Vec<Vec<u8>> = native.certs.iter().map(|c| c.to_vec()).collect();
    if !from_env.is_empty() || !der.is_empty() {
        return TlsRoots {
            source: if from_env.is_empty() {
                "system store".into()
            } else {
                from_env.join(", ")
            },
            certificates: der.len(),
            errors,
            der,
        };
    }
    let der: Vec<Vec<u8>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| c.to_vec())
        .collect();
    TlsRoots {
        source: "bundled webpki roots (no system store found)".into(),
        certificates: der.len(),
        errors,
        der,
    }
}

/// `builder` trusting exactly [`tls_roots`] for `https://` URLs.
pub(crate) fn with_roots(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    #[cfg(feature = "https")]
    {
        let roots = tls_roots();
        let certs = roots
            .der
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok());
        builder.tls_certs_only(certs)
    }
    #[cfg(not(feature = "https"))]
    builder
}
