//! Certificates made at test time (rcgen): a throwaway CA and a server
//! certificate it signed, written as PEM files for the binaries under test.
//! Nothing private is committed; every test process makes its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The names the server certificate is valid for: `localhost`, the name
/// grpc-go's interop tests use with `--server_host_override`, and 127.0.0.1.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "foo.test.google.fr", "127.0.0.1"];

/// PEM files of a test CA and a server certificate it signed.
pub struct TestPki {
    pub dir: PathBuf,
    /// The CA certificate, for clients to trust.
    pub ca: PathBuf,
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl TestPki {
    /// Makes a CA and a server certificate for [`SERVER_NAMES`] in a fresh
    /// directory under the target's temp dir.
    pub fn generate() -> TestPki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create tls dir");

        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "grpc-chat test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "grpc-chat test server");
        let server_cert = params.signed_by(&server_key, &issuer).expect("sign server");

        let pki = TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            dir,
        };
        std::fs::write(&pki.ca, ca_cert.pem()).expect("write CA");
        std::fs::write(&pki.cert, server_cert.pem()).expect("write cert");
        std::fs::write(&pki.key, server_key.serialize_pem()).expect("write key");
        pki
    }

    /// A path as a command-line argument.
    pub fn arg(path: &std::path::Path) -> String {
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
