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
    let ca_dir = d.join("ca");
    let certs = d.join("certs");
    let run = |args: &[&str]| {
        bin()
            .args(args)
            .arg("--ca-dir")
            .arg(&ca_dir)
            .arg("--out")
            .arg(&certs)
            .output()
            .unwrap()
    };
    assert!(
        bin()
            .args(["certs", "ca", "--out"])
            .arg(&ca_dir)
            .status()
            .unwrap()
            .success()
    );
    for args in [
        &["certs", "node", "n1"][..],
        &["certs", "client", "app"],
        &["certs", "admin", "ops"],
        &["certs", "node", "storage-a", "--id", "7"],
        &["certs", "client", "short", "--days", "30"],
    ] {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A node certificate must name its node.
    let unnamed = run(&["certs", "node", "storage-b"]);
    assert!(!unnamed.status.success());
    assert!(
        String::from_utf8_lossy(&unnamed.stderr).contains("--id"),
        "{}",
        String::from_utf8_lossy(&unnamed.stderr)
    );
    // Leaves are not written next to the CA key unless asked.
    let beside = bin()
        .args(["certs", "client", "x", "--ca-dir"])
        .arg(&ca_dir)
        .arg("--out")
        .arg(&ca_dir)
        .output()
        .unwrap();
    assert!(!beside.status.success());
    assert!(String::from_utf8_lossy(&beside.stderr).contains("CA key"));
    assert!(!ca_dir.join("x.pem").exists());
    assert!(ca_dir.join("ca-key.pem").is_file());
    for f in [
        "ca.pem",
        "n1.pem",
        "n1-key.pem",
        "app.pem",
        "app-key.pem",
        "ops.pem",
        "ops-key.pem",
        "storage-a.pem",
    ] {
        assert!(certs.join(f).is_file(), "{f} missing");
    }
    assert!(
        !certs.join("ca-key.pem").exists(),
        "the CA key stays in its directory"
    );
    // Each names its role, and expires when asked.
    use ringkv_shared::roles::Role;
    let day = std::time::Duration::from_secs(86_400);
    for (file, role, days) in [
        ("n1.pem", Role::Node(ringkv_shared::NodeId(1)), 365),
        ("storage-a.pem", Role::Node(ringkv_shared::NodeId(7)), 365),
        ("ops.pem", Role::Admin, 365),
        ("app.pem", Role::Client, 365),
        ("short.pem", Role::Client, 30),
    ] {
        let id = ringkv_net::quic::TlsIdentity::load(
            &certs.join("ca.pem"),
            &certs.join(file),
            &certs.join(file.replace(".pem", "-key.pem")),
        )
        .unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&id.cert_pem).unwrap();
        assert_eq!(ringkv_net::quic::role_of_certificate(&der), role, "{file}");
        let left = ringkv_net::quic::certificate_expiry(&der)
            .unwrap()
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        assert!(
            left > day * (days - 1) && left <= day * days,
            "{file}: expires in {left:?}, asked for {days} days"
        );
    }
    // Refuses to overwrite a CA key.
    assert!(
        !bin()
            .args(["certs", "ca", "--out"])
            .arg(&ca_dir)
            .status()
            .unwrap()
            .success()
    );
    // The issued node certificate chains to the CA: a server config builds from it.
    let id = ringkv_net::quic::TlsIdentity::load(
        &certs.join("ca.pem"),
        &certs.join("n1.pem"),
        &certs.join("n1-key.pem"),
    )
    .unwrap();
    ringkv_net::quic::server_config(&id, &ringkv_shared::Limits::default()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(certs.join(f))
                .unwrap()
                .permissions()
                .mode()
        };
        assert_eq!(
            mode("n1-key.pem") & 0o077,
            0,
            "private keys are not readable by others"
        );
        // Reissued over a key file someone opened up: 0600 again.
        std::fs::set_permissions(
            certs.join("app-key.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(run(&["certs", "client", "app"]).status.success());
        assert_eq!(
            mode("app-key.pem") & 0o077,
            0,
            "0600 every time a key is written"
        );
    }
}
