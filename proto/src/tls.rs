//! Mutual TLS for the proxy ↔ signer link.
//!
//! The link uses its own private certificate authority: the proxy presents a
//! server certificate and the signer a client certificate, both issued by that
//! CA, and each end trusts that CA alone (never the system roots). A signer
//! without a certificate from the CA cannot open a stream, and the signer
//! talks only to a proxy that holds the CA-issued server key.
//!
//! [`generate_ca_and_certs`] creates the whole set in one directory:
//!
//! | file | what | used by |
//! |---|---|---|
//! | [`CA_CERT`] (`ca.pem`) | CA certificate | both ends (trust anchor) |
//! | [`CA_KEY`] (`ca-key.pem`) | CA private key | nobody at run time; keep it offline |
//! | [`PROXY_CERT`] (`proxy.pem`) | server certificate | proxy |
//! | [`PROXY_KEY`] (`proxy-key.pem`) | server private key | proxy |
//! | [`SIGNER_CERT`] (`signer.pem`) | client certificate | signer |
//! | [`SIGNER_KEY`] (`signer-key.pem`) | client private key | signer |
//!
//! [`ServerTls`] and [`ClientTls`] load them into tonic's TLS configurations,
//! from that layout or from explicit paths ([`TlsPaths`]), and check each file
//! as they go so that a mistake is reported with the file's path rather than
//! as a failed handshake later.
//!
//! TLS is provided by rustls with the *ring* crypto provider (tonic's
//! `tls-ring` feature), which builds with cargo and a C compiler alone.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// File name of the CA certificate, the trust anchor of both ends.
pub const CA_CERT: &str = "ca.pem";
/// File name of the CA private key. Needed only to issue new certificates.
pub const CA_KEY: &str = "ca-key.pem";
/// File name of the proxy's (server) certificate.
pub const PROXY_CERT: &str = "proxy.pem";
/// File name of the proxy's (server) private key.
pub const PROXY_KEY: &str = "proxy-key.pem";
/// File name of the signer's (client) certificate.
pub const SIGNER_CERT: &str = "signer.pem";
/// File name of the signer's (client) private key.
pub const SIGNER_KEY: &str = "signer-key.pem";

/// Names always put in the proxy certificate's subject alternative names, so
/// that a signer on the same host can dial `https://localhost:PORT`,
/// `https://127.0.0.1:PORT` or `https://[::1]:PORT`.
pub const DEFAULT_PROXY_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How long generated certificates are valid from the moment they are made
/// (ten years). They are also back-dated by [`CLOCK_SKEW_ALLOWANCE`].
pub const CERT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// How far generated certificates are back-dated, so that a peer whose clock
/// is a little behind still accepts them (one day).
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(24 * 60 * 60);

/// How long either end waits for the TLS handshake to finish (10 s).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why certificates could not be generated or loaded. Every variant that is
/// about a file names it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that must be read does not exist.
    #[error("TLS file {} does not exist", path.display())]
    Missing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("cannot read TLS file {}: {source}", path.display())]
    Read {
        /// The file that was read.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{} is not valid PEM: {reason}", path.display())]
    InvalidPem {
        /// The file that was parsed.
        path: PathBuf,
        /// What the PEM parser objected to.
        reason: String,
    },
    /// A file that should hold a certificate holds none.
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file that was parsed.
        path: PathBuf,
    },
    /// A file that should hold a private key holds none.
    #[error("{} holds no PEM private key", path.display())]
    NoPrivateKey {
        /// The file that was parsed.
        path: PathBuf,
    },
    /// A private key could not be used for TLS (unsupported algorithm or
    /// malformed key).
    #[error("private key in {} is unusable: {reason}", path.display())]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// Why rustls refused the key.
        reason: String,
    },
    /// A certificate and a private key do not belong together.
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Certificate generation would overwrite an existing file. Nothing was
    /// written.
    #[error("refusing to overwrite existing file {}", path.display())]
    AlreadyExists {
        /// The file that already exists.
        path: PathBuf,
    },
    /// A generated file (or its directory) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A proxy name is neither a valid DNS name nor an IP address.
    #[error("invalid proxy name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is not a usable server name.
        reason: String,
    },
    /// Key generation or certificate signing failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The files written by [`generate_ca_and_certs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedCerts {
    /// The CA certificate ([`CA_CERT`]).
    pub ca_cert: PathBuf,
    /// The CA private key ([`CA_KEY`]), mode 0600.
    pub ca_key: PathBuf,
    /// The proxy's server certificate ([`PROXY_CERT`]).
    pub proxy_cert: PathBuf,
    /// The proxy's private key ([`PROXY_KEY`]), mode 0600.
    pub proxy_key: PathBuf,
    /// The signer's client certificate ([`SIGNER_CERT`]).
    pub signer_cert: PathBuf,
    /// The signer's private key ([`SIGNER_KEY`]), mode 0600.
    pub signer_key: PathBuf,
}

impl GeneratedCerts {
    /// The six paths under `dir`, in the fixed layout.
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        GeneratedCerts {
            ca_cert: dir.join(CA_CERT),
            ca_key: dir.join(CA_KEY),
            proxy_cert: dir.join(PROXY_CERT),
            proxy_key: dir.join(PROXY_KEY),
            signer_cert: dir.join(SIGNER_CERT),
            signer_key: dir.join(SIGNER_KEY),
        }
    }

    fn all(&self) -> [&Path; 6] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.proxy_cert,
            &self.proxy_key,
            &self.signer_cert,
            &self.signer_key,
        ]
    }
}

/// Creates a new CA and issues the proxy's server certificate and the
/// signer's client certificate from it, writing the six files of the layout
/// (see the [module docs](self)) into `dir`.
///
/// The proxy certificate's subject alternative names are
/// [`DEFAULT_PROXY_NAMES`] followed by `proxy_names` (DNS names or IP
/// addresses under which the signer reaches the proxy). Keys are ECDSA P-256.
///
/// `dir` is created (mode 0700) if it does not exist. Private keys are
/// created with mode 0600, certificates 0644. If any of the six files already
/// exists, nothing is written and [`TlsError::AlreadyExists`] names it; if a
/// write fails half-way, the files written by this call are removed again.
pub fn generate_ca_and_certs(
    dir: impl AsRef<Path>,
    proxy_names: &[String],
) -> Result<GeneratedCerts, TlsError> {
    let dir = dir.as_ref();
    let files = GeneratedCerts::in_dir(dir);

    // Everything that can fail without touching the disk comes first.
    let proxy_params = proxy_params(proxy_names)?;
    if let Some(path) = files.all().into_iter().find(|p| p.exists()) {
        return Err(TlsError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }

    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params();
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::from_params(&ca_params, &ca_key);

    let proxy_key = KeyPair::generate()?;
    let proxy_cert = proxy_params.signed_by(&proxy_key, &ca)?;

    let signer_key = KeyPair::generate()?;
    let signer_cert = signer_params().signed_by(&signer_key, &ca)?;

    create_dir(dir)?;
    let contents = [
        (&files.ca_cert, ca_cert.pem(), FileKind::Public),
        (&files.ca_key, ca_key.serialize_pem(), FileKind::Secret),
        (&files.proxy_cert, proxy_cert.pem(), FileKind::Public),
        (
            &files.proxy_key,
            proxy_key.serialize_pem(),
            FileKind::Secret,
        ),
        (&files.signer_cert, signer_cert.pem(), FileKind::Public),
        (
            &files.signer_key,
            signer_key.serialize_pem(),
            FileKind::Secret,
        ),
    ];
    let mut written = Vec::with_capacity(contents.len());
    for (path, pem, kind) in contents {
        if let Err(e) = write_new(path, pem.as_bytes(), kind) {
            for done in written {
                let _ = fs::remove_file(done);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(files)
}

/// Where one end's TLS material lives: the CA certificate it trusts, and its
/// own certificate and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The CA certificate that the peer's certificate must chain to.
    pub ca: PathBuf,
    /// This end's certificate (PEM; may be followed by intermediates).
    pub cert: PathBuf,
    /// This end's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl TlsPaths {
    /// The proxy's files in `dir`: [`CA_CERT`], [`PROXY_CERT`], [`PROXY_KEY`].
    pub fn proxy(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        TlsPaths {
            ca: dir.join(CA_CERT),
            cert: dir.join(PROXY_CERT),
            key: dir.join(PROXY_KEY),
        }
    }

    /// The signer's files in `dir`: [`CA_CERT`], [`SIGNER_CERT`],
    /// [`SIGNER_KEY`].
    pub fn signer(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        TlsPaths {
            ca: dir.join(CA_CERT),
            cert: dir.join(SIGNER_CERT),
            key: dir.join(SIGNER_KEY),
        }
    }
}

/// The proxy's (server's) side of mutual TLS.
#[derive(Debug, Clone, Copy)]
pub struct ServerTls;

impl ServerTls {
    /// Loads the proxy's files from `dir` (see [`TlsPaths::proxy`]).
    pub fn load(dir: impl AsRef<Path>) -> Result<ServerTlsConfig, TlsError> {
        Self::from_paths(&TlsPaths::proxy(dir))
    }

    /// Builds the server configuration from explicit paths.
    ///
    /// The server presents `paths.cert`/`paths.key` and *requires* every
    /// client to present a certificate that chains to `paths.ca`; a client
    /// without one, or with one from another CA, fails the handshake. The
    /// handshake is bounded by [`TLS_HANDSHAKE_TIMEOUT`]. Also installs the
    /// ring crypto provider (see [`install_crypto_provider`]).
    pub fn from_paths(paths: &TlsPaths) -> Result<ServerTlsConfig, TlsError> {
        let material = Material::load(paths)?;
        install_crypto_provider();
        Ok(ServerTlsConfig::new()
            .identity(material.identity)
            .client_ca_root(material.ca)
            .client_auth_optional(false)
            .timeout(TLS_HANDSHAKE_TIMEOUT))
    }
}

/// The signer's (client's) side of mutual TLS.
#[derive(Debug, Clone, Copy)]
pub struct ClientTls;

impl ClientTls {
    /// Loads the signer's files from `dir` (see [`TlsPaths::signer`]).
    pub fn load(dir: impl AsRef<Path>) -> Result<ClientTlsConfig, TlsError> {
        Self::from_paths(&TlsPaths::signer(dir))
    }

    /// Builds the client configuration from explicit paths.
    ///
    /// The client presents `paths.cert`/`paths.key` and trusts only
    /// `paths.ca` (no system roots). The proxy's certificate is checked
    /// against the host of the URI dialled, so dial a name in its subject
    /// alternative names (e.g. `https://127.0.0.1:PORT`), or override it with
    /// [`ClientTlsConfig::domain_name`]. The handshake is bounded by
    /// [`TLS_HANDSHAKE_TIMEOUT`]. Also installs the ring crypto provider (see
    /// [`install_crypto_provider`]).
    pub fn from_paths(paths: &TlsPaths) -> Result<ClientTlsConfig, TlsError> {
        let material = Material::load(paths)?;
        install_crypto_provider();
        Ok(ClientTlsConfig::new()
            .ca_certificate(material.ca)
            .identity(material.identity)
            .timeout(TLS_HANDSHAKE_TIMEOUT))
    }
}

/// Makes rustls' *ring* provider the process-wide default, unless a default
/// is already installed.
///
/// tonic's server asks rustls for the process default. With only *ring*
/// compiled in, rustls finds it by itself, but if another crate in the same
/// binary enables a second provider (aws-lc-rs), rustls can no longer choose
/// and the server would fail at its first connection. [`ServerTls`] and
/// [`ClientTls`] call this for you; it is idempotent.
pub fn install_crypto_provider() {
    // An error means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One end's TLS material, read and checked.
struct Material {
    ca: Certificate,
    identity: Identity,
}

impl Material {
    fn load(paths: &TlsPaths) -> Result<Self, TlsError> {
        let ca_pem = read(&paths.ca)?;
        certificates(&paths.ca, &ca_pem)?;

        let cert_pem = read(&paths.cert)?;
        let chain = certificates(&paths.cert, &cert_pem)?;

        let key_pem = read(&paths.key)?;
        let key = private_key(&paths.key, &key_pem)?;
        check_key_matches(paths, chain, key)?;

        Ok(Material {
            ca: Certificate::from_pem(ca_pem),
            identity: Identity::from_pem(cert_pem, key_pem),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_path_buf(),
        },
        _ => TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn invalid_pem(path: &Path, error: pem::Error) -> TlsError {
    TlsError::InvalidPem {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// Every certificate in `pem`; at least one.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid_pem(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in `pem`.
fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        e => invalid_pem(path, e),
    })
}

/// Checks that rustls can use `key` and that it belongs to the first
/// certificate of `chain`.
fn check_key_matches(
    paths: &TlsPaths,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(), TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    match CertifiedKey::from_der(chain, key, &provider) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: paths.cert.clone(),
                key: paths.key.clone(),
            })
        }
        Err(e) => Err(TlsError::UnusableKey {
            path: paths.key.clone(),
            reason: e.to_string(),
        }),
    }
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + CERT_VALIDITY;
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vls-proxy link");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name("vls-proxy link CA");
    // The CA issues end-entity certificates only, no intermediates.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    params
}

fn proxy_params(extra_names: &[String]) -> Result<CertificateParams, TlsError> {
    let mut names: Vec<String> = DEFAULT_PROXY_NAMES.iter().map(|n| n.to_string()).collect();
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    // The same check the signer's TLS client makes on the name it dials, so
    // that every name in the certificate is one a signer can use.
    for name in &names {
        ServerName::try_from(name.as_str()).map_err(|e| TlsError::InvalidName {
            name: name.clone(),
            reason: e.to_string(),
        })?;
    }
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = distinguished_name("vls-proxy");
    leaf(&mut params, ExtendedKeyUsagePurpose::ServerAuth);
    Ok(params)
}

fn signer_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name("signer");
    leaf(&mut params, ExtendedKeyUsagePurpose::ClientAuth);
    params
}

fn leaf(params: &mut CertificateParams, usage: ExtendedKeyUsagePurpose) {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(params);
}

#[derive(Clone, Copy)]
enum FileKind {
    /// World-readable (0644): certificates.
    Public,
    /// Owner-only (0600): private keys.
    Secret,
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `contents` to a file that must not exist yet, with the permissions
/// of `kind` from the moment it is created.
fn write_new(path: &Path, contents: &[u8], kind: FileKind) -> Result<(), TlsError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(
        &mut options,
        match kind {
            FileKind::Public => 0o644,
            FileKind::Secret => 0o600,
        },
    );
    #[cfg(not(unix))]
    let _ = kind;
    let mut file = options.open(path).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => TlsError::AlreadyExists {
            path: path.to_path_buf(),
        },
        _ => TlsError::Write {
            path: path.to_path_buf(),
            source,
        },
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> (tempfile::TempDir, GeneratedCerts) {
        let dir = tempfile::tempdir().unwrap();
        let files = generate_ca_and_certs(dir.path(), &["proxy.example".to_string()]).unwrap();
        (dir, files)
    }

    #[test]
    fn generates_the_six_files_and_both_ends_load_them() {
        let (dir, files) = generated();
        assert_eq!(files, GeneratedCerts::in_dir(dir.path()));
        for path in files.all() {
            assert!(path.is_file(), "{} missing", path.display());
        }
        ServerTls::load(dir.path()).unwrap();
        ClientTls::load(dir.path()).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, files) = generated();
        for key in [&files.ca_key, &files.proxy_key, &files.signer_key] {
            let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    #[test]
    fn refuses_to_overwrite_and_leaves_existing_files_alone() {
        let (dir, files) = generated();
        let before = fs::read(&files.ca_key).unwrap();
        let err = generate_ca_and_certs(dir.path(), &[]).unwrap_err();
        assert!(
            matches!(err, TlsError::AlreadyExists { ref path } if path == &files.ca_cert),
            "{err}"
        );
        assert_eq!(fs::read(&files.ca_key).unwrap(), before);

        // One stray file is enough to refuse, and nothing else gets written.
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join(SIGNER_KEY), b"mine").unwrap();
        let err = generate_ca_and_certs(other.path(), &[]).unwrap_err();
        assert!(matches!(err, TlsError::AlreadyExists { .. }), "{err}");
        assert!(!other.path().join(CA_CERT).exists());
    }

    #[test]
    fn creates_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        generate_ca_and_certs(&nested, &[]).unwrap();
        assert!(nested.join(CA_CERT).is_file());
    }

    #[test]
    fn rejects_an_invalid_proxy_name_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["proxy.example".to_string(), "not a name".to_string()];
        let err = generate_ca_and_certs(dir.path(), &names).unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidName { ref name, .. } if name == "not a name"),
            "{err}"
        );
        assert!(!dir.path().join(CA_CERT).exists());
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ServerTls::load(dir.path()).unwrap_err();
        assert!(matches!(err, TlsError::Missing { ref path } if path == &dir.path().join(CA_CERT)));
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }

    #[test]
    fn garbage_is_reported_per_file() {
        let (dir, files) = generated();

        fs::write(&files.proxy_cert, b"not pem at all").unwrap();
        let err = ServerTls::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, TlsError::NoCertificate { ref path } if path == &files.proxy_cert),
            "{err}"
        );

        fs::write(&files.proxy_cert, b"-----BEGIN CERTIFICATE-----\n!!!!\n").unwrap();
        let err = ServerTls::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidPem { ref path, .. } if path == &files.proxy_cert),
            "{err}"
        );

        // A certificate where the key should be.
        fs::copy(&files.signer_cert, &files.signer_key).unwrap();
        let err = ClientTls::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, TlsError::NoPrivateKey { ref path } if path == &files.signer_key),
            "{err}"
        );
    }

    #[test]
    fn mismatched_key_is_reported() {
        let (dir, files) = generated();
        let paths = TlsPaths {
            ca: files.ca_cert.clone(),
            cert: files.signer_cert.clone(),
            key: files.proxy_key.clone(),
        };
        let err = ClientTls::from_paths(&paths).unwrap_err();
        assert!(
            matches!(err, TlsError::KeyMismatch { ref cert, ref key }
                if cert == &files.signer_cert && key == &files.proxy_key),
            "{err}"
        );
        drop(dir);
    }

    #[test]
    fn explicit_paths_default_to_the_layout() {
        let paths = TlsPaths::signer("/etc/vls");
        assert_eq!(paths.ca, Path::new("/etc/vls/ca.pem"));
        assert_eq!(paths.cert, Path::new("/etc/vls/signer.pem"));
        assert_eq!(paths.key, Path::new("/etc/vls/signer-key.pem"));
        let paths = TlsPaths::proxy("/etc/vls");
        assert_eq!(paths.cert, Path::new("/etc/vls/proxy.pem"));
        assert_eq!(paths.key, Path::new("/etc/vls/proxy-key.pem"));
    }
}
