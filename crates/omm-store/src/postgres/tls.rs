//! TLS to PostgreSQL with libpq's connection-string semantics.
//!
//! `tokio-postgres` understands `sslmode=disable|prefer|require` only and rejects the other
//! libpq parameters, yet managed databases hand out URLs such as
//! `postgres://u@db.example/omm?sslmode=verify-full&sslrootcert=/etc/omm/ca.pem`. This module
//! takes `sslmode` and `sslrootcert` out of the URL, gives `tokio-postgres` the mode it knows,
//! and builds a rustls connector that verifies what libpq would verify:
//!
//! | `sslmode` | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | — | — |
//! | `allow`, `prefer` (default) | if the server offers it | no | no |
//! | `require` | yes | only if `sslrootcert` is given (as libpq) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! `sslrootcert` is a PEM file of trusted certificates, or `system` for the Mozilla root set
//! built into the binary (also the default of the two `verify-` modes when it is absent).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Result, StoreError};

/// What the server's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Encryption only (libpq `prefer` and `require` without a root certificate).
    None,
    /// The chain must lead to a trusted root; the host name is not checked.
    Chain,
    /// Chain and host name.
    Full,
}

/// A parsed connection string: what `tokio-postgres` gets, and how to connect.
pub(crate) struct ConnectSpec {
    /// Configuration for `tokio-postgres`, `sslmode` mapped to a value it understands.
    pub(crate) config: tokio_postgres::Config,
    /// The TLS connector; also used for `prefer`, where the server may decline.
    pub(crate) tls: MakeRustlsConnect,
    /// What is verified (for logs and tests).
    pub(crate) verify: Verify,
}

impl fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectSpec")
            .field("ssl_mode", &self.config.get_ssl_mode())
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

/// Parses a PostgreSQL URL or key/value connection string with libpq's TLS parameters.
pub(crate) fn parse(conn: &str) -> Result<ConnectSpec> {
    let (rewritten, ssl) = take_ssl_params(conn)?;
    let config: tokio_postgres::Config = rewritten
        .parse()
        .map_err(|e| StoreError::InvalidArgument(format!("invalid PostgreSQL URL: {e}")))?;
    let (verify, roots) = match ssl.mode.as_deref().unwrap_or("prefer") {
        "disable" | "allow" | "prefer" => (Verify::None, None),
        "require" => match ssl.root_cert {
            Some(r) => (Verify::Chain, Some(r)),
            None => (Verify::None, None),
        },
        "verify-ca" => (Verify::Chain, Some(ssl.root_cert.unwrap_or_default())),
        "verify-full" => (Verify::Full, Some(ssl.root_cert.unwrap_or_default())),
        other => {
            return Err(StoreError::InvalidArgument(format!(
                "invalid sslmode '{other}': use disable, allow, prefer, require, verify-ca or \
                 verify-full"
            )))
        }
    };
    let tls = connector(verify, roots.as_deref())?;
    Ok(ConnectSpec {
        config,
        tls,
        verify,
    })
}

/// `sslmode` and `sslrootcert` as given by the user.
#[derive(Debug, Default, PartialEq, Eq)]
struct SslParams {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// Removes `sslrootcert` and maps `sslmode` to what `tokio-postgres` parses; other parameters
/// are kept byte for byte.
fn take_ssl_params(conn: &str) -> Result<(String, SslParams)> {
    let mut ssl = SslParams::default();
    let is_url = conn.starts_with("postgres://") || conn.starts_with("postgresql://");
    let rewritten = if is_url {
        let Some((base, query)) = conn.split_once('?') else {
            return Ok((conn.to_owned(), ssl));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "sslmode" => {
                    kept.push(format!("sslmode={}", tokio_mode(&value)));
                    ssl.mode = Some(value);
                }
                "sslrootcert" => ssl.root_cert = Some(value),
                _ => kept.push(pair.to_owned()),
            }
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for (key, raw, value) in key_values(conn)? {
            match key.as_str() {
                "sslmode" => {
                    kept.push(format!("sslmode={}", tokio_mode(&value)));
                    ssl.mode = Some(value);
                }
                "sslrootcert" => ssl.root_cert = Some(value),
                _ => kept.push(raw),
            }
        }
        kept.join(" ")
    };
    Ok((rewritten, ssl))
}

/// The `tokio-postgres` mode that gives libpq's behaviour for `mode` (verification is ours).
fn tokio_mode(mode: &str) -> &str {
    match mode {
        "allow" => "prefer",
        "verify-ca" | "verify-full" => "require",
        // Unknown values pass through so that the error names them; `parse` rejects them too.
        other => other,
    }
}

/// Splits a libpq key/value string into (key, the token as written, unquoted value).
fn key_values(conn: &str) -> Result<Vec<(String, String, String)>> {
    let bad = || StoreError::InvalidArgument("invalid PostgreSQL connection string".into());
    let mut out = Vec::new();
    let mut chars = conn.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(bad());
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next().ok_or_else(bad)?.1 {
                    '\'' => break,
                    '\\' => value.push(chars.next().ok_or_else(bad)?.1),
                    c => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or_else(bad)?.1);
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(conn.len(), |&(i, _)| i);
        out.push((key, conn[start..end].trim_end().to_owned(), value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    StoreError::InvalidArgument("invalid percent-encoding in PostgreSQL URL".into())
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| StoreError::InvalidArgument("PostgreSQL URL is not valid UTF-8".into()))
}

/// Builds the rustls connector for `verify`, trusting `roots` (a PEM path, `system` or "").
fn connector(verify: Verify, roots: Option<&str>) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::InvalidArgument(format!("TLS set-up failed: {e}")))?;
    let config = match verify {
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::Full => {
            let store = Arc::new(root_store(roots.unwrap_or_default())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(store, provider)
                .build()
                .map_err(|e| StoreError::InvalidArgument(format!("TLS set-up failed: {e}")))?;
            if verify == Verify::Full {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn root_store(roots: &str) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    if roots.is_empty() || roots == "system" {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    }
    let unreadable =
        |e: &dyn fmt::Display| StoreError::InvalidArgument(format!("sslrootcert '{roots}': {e}"));
    let certs = CertificateDer::pem_file_iter(roots).map_err(|e| unreadable(&e))?;
    for cert in certs {
        let cert = cert.map_err(|e| unreadable(&e))?;
        store.add(cert).map_err(|e| unreadable(&e))?;
    }
    if store.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    Ok(store)
}

/// libpq's `require`/`prefer`: the channel is encrypted and the handshake signed by the key of
/// the certificate presented, but the certificate itself is not checked.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted root, whatever name it is for.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode;

    #[test]
    fn url_parameters_are_mapped_and_the_rest_kept() {
        let (s, ssl) = take_ssl_params(
            "postgres://u@h:5/db?options=-c%20search_path%3Dx&sslmode=verify-full&sslrootcert=%2Fa%20b.pem",
        )
        .unwrap();
        assert_eq!(
            s,
            "postgres://u@h:5/db?options=-c%20search_path%3Dx&sslmode=require"
        );
        assert_eq!(ssl.mode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.root_cert.as_deref(), Some("/a b.pem"));

        let (s, ssl) = take_ssl_params("postgresql://u@h/db?sslrootcert=system").unwrap();
        assert_eq!(s, "postgresql://u@h/db");
        assert_eq!(ssl.root_cert.as_deref(), Some("system"));

        let (s, _) = take_ssl_params("postgres://u@h/db").unwrap();
        assert_eq!(s, "postgres://u@h/db");
    }

    #[test]
    fn key_value_strings_are_mapped_and_quotes_respected() {
        let (s, ssl) = take_ssl_params(
            "host=h user=u  sslmode = verify-ca sslrootcert='/x y/ca.pem' password='a\\'b c'",
        )
        .unwrap();
        assert_eq!(s, "host=h user=u sslmode=require password='a\\'b c'");
        assert_eq!(ssl.mode.as_deref(), Some("verify-ca"));
        assert_eq!(ssl.root_cert.as_deref(), Some("/x y/ca.pem"));
        assert!(take_ssl_params("host=h sslrootcert='unterminated").is_err());
        assert!(take_ssl_params("host").is_err());
    }

    #[test]
    fn modes_select_verification() {
        let spec = parse("postgres://u@h/db").unwrap();
        assert_eq!(spec.verify, Verify::None);
        assert_eq!(spec.config.get_ssl_mode(), SslMode::Prefer);
        let spec = parse("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(spec.config.get_ssl_mode(), SslMode::Disable);
        let spec = parse("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (spec.verify, spec.config.get_ssl_mode()),
            (Verify::None, SslMode::Require)
        );
        let spec = parse("postgres://u@h/db?sslmode=verify-ca").unwrap();
        assert_eq!(
            (spec.verify, spec.config.get_ssl_mode()),
            (Verify::Chain, SslMode::Require)
        );
        let spec = parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(spec.verify, Verify::Full);
    }

    #[test]
    fn bad_values_are_client_errors() {
        for url in [
            "postgres://u@h/db?sslmode=sometimes",
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "postgres://u@h/db?sslmode=%zz",
        ] {
            match parse(url) {
                Err(StoreError::InvalidArgument(m)) => assert!(!m.is_empty(), "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
