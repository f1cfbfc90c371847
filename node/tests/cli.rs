//! The `ringkv-node` binary: config errors name the field; `certs` makes usable certificates.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringkv-node"))
}

#[test]
fn a_bad_config_is_reported_with_the_field_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"d\"\npartitions = 1000\n\
         [tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
         [[members]]\nid = 1\naddr = \"127.0.0.1:7001\"\n",
    )
    .unwrap();
    let out = bin().arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`partitions`"), "stderr: {err}");

    std::fs::write(&cfg, "id = \"one\"\n").unwrap();
    let out = bin().arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("id"), "stderr: {err}");

    let out = bin().output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[test]
fn certs_subcommands_make_a_ca_and_signed_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        bin()
            .args(["certs", "ca", "--out"])
            .arg(d)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        bin()
            .args(["certs", "node", "n1", "--ca-dir"])
            .arg(d)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        bin()
            .args(["certs", "client", "app", "--ca-dir"])
            .arg(d)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        bin()
            .args(["certs", "admin", "ops", "--ca-dir"])
            .arg(d)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        bin()
            .args(["certs", "node", "storage-a", "--id", "7", "--ca-dir"])
            .arg(d)
            .status()
            .unwrap()
            .success()
    );
    // A node certificate must name its node.
    let unnamed = bin()
        .args(["certs", "node", "storage-b", "--ca-dir"])
        .arg(d)
        .output()
        .unwrap();
    assert!(!unnamed.status.success());
    assert!(
        String::from_utf8_lossy(&unnamed.stderr).contains("--id"),
        "{}",
        String::from_utf8_lossy(&unnamed.stderr)
    );
    for f in [
        "ca.pem",
        "ca-key.pem",
        "n1.pem",
        "n1-key.pem",
        "app.pem",
        "app-key.pem",
        "ops.pem",
        "ops-key.pem",
        "storage-a.pem",
    ] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
    // Each names its role.
    use ringkv_shared::roles::Role;
    for (file, role) in [
        ("n1.pem", Role::Node(ringkv_shared::NodeId(1))),
        ("storage-a.pem", Role::Node(ringkv_shared::NodeId(7))),
        ("ops.pem", Role::Admin),
        ("app.pem", Role::Client),
    ] {
        let id = ringkv_net::quic::TlsIdentity::load(
            &d.join("ca.pem"),
            &d.join(file),
            &d.join(file.replace(".pem", "-key.pem")),
        )
        .unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&id.cert_pem).unwrap();
        assert_eq!(ringkv_net::quic::role_of_certificate(&der), role, "{file}");
    }
    // Refuses to overwrite a CA key.
    assert!(
        !bin()
            .args(["certs", "ca", "--out"])
            .arg(d)
            .status()
            .unwrap()
            .success()
    );
    // The issued node certificate chains to the CA: a server config builds from it.
    let id = ringkv_net::quic::TlsIdentity::load(
        &d.join("ca.pem"),
        &d.join("n1.pem"),
        &d.join("n1-key.pem"),
    )
    .unwrap();
    ringkv_net::quic::server_config(&id, &ringkv_shared::Limits::default()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("n1-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private keys are not readable by others");
    }
}
