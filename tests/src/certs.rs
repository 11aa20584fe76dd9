//! Certificates for TLS tests, made at test time with the `openssl` CLI: a CA, a server
//! certificate for `localhost`/`127.0.0.1` and a client certificate for the SCRAM test
//! user, EC P-256 (quick to make).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::SCRAM_USER;

/// A CA with a server certificate (localhost, 127.0.0.1) and a client certificate
/// (CN = the SCRAM test user), all in one directory.
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The server certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// The server certificate's key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// The client certificate (PEM).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    /// The client certificate's key (PEM).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a fresh CA and its leaf certificates in `dir` (EC P-256: quick to make).
pub fn make_certs(dir: &Path, ca_name: &str) -> Certs {
    std::fs::create_dir_all(dir).expect("cert dir");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    let subj = format!("/CN={ca_name}");
    ca.extend([
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj", &subj,
    ]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            SCRAM_USER,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
        let mut req = vec!["req"];
        req.extend(ec);
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let extfile = format!("{name}.ext");
        let subj = format!("/CN={cn}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", &crt, "-days", "30", "-extfile", &extfile,
            ],
        );
    }
    Certs {
        dir: dir.to_owned(),
    }
}
