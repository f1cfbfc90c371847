//! A node bound to every interface and announced by host name: `listen = "0.0.0.0:port"`,
//! `advertise` and `[[members]]` given as `localhost:port`, the admin CLI pointed at
//! `localhost:port`, and a client given its seed by name that reaches the node at the
//! announced address.

mod support;

use anyhow::{Result, ensure};
use std::time::Duration;
use support::{ChildGuard, admin_binary, eventually, free_udp_port, node_binary, write_certs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_bound_to_every_interface_is_announced_by_its_advertised_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let admin = write_certs(dir.path(), 1)?;
    std::fs::write(dir.path().join("admin.pem"), &admin.cert_pem)?;
    std::fs::write(dir.path().join("admin-key.pem"), &admin.key_pem)?;
    let port = free_udp_port()?;
    let config = dir.path().join("n1.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\nlisten = \"0.0.0.0:{port}\"\nadvertise = \"localhost:{port}\"\n\
             data_dir = \"data\"\npartitions = 16\nreplication = 1\n\
             [tls]\nca = \"ca.pem\"\ncert = \"n1.pem\"\nkey = \"n1-key.pem\"\n\
             [[members]]\nid = 1\naddr = \"localhost:{port}\"\n"
        ),
    )?;
    let out = dir.path().join("out");
    let child = std::process::Command::new(node_binary()?)
        .arg("--config")
        .arg(&config)
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(dir.path().join("err"))?)
        .spawn()?;
    let mut node = ChildGuard(Some(child));
    eventually(Duration::from_secs(30), "the node listens", || async {
        std::fs::read_to_string(&out).is_ok_and(|o| o.contains("announced to the cluster as"))
    })
    .await?;
    let said = std::fs::read_to_string(&out)?;
    ensure!(
        said.contains(&format!("0.0.0.0:{port}")) && said.contains(&format!("127.0.0.1:{port}")),
        "{said}"
    );

    // The admin CLI by name; the view holds the announced address, not the wildcard.
    let members = std::process::Command::new(admin_binary()?)
        .args(["--node", &format!("localhost:{port}"), "members"])
        .env("RINGKV_CA", dir.path().join("ca.pem"))
        .env("RINGKV_CERT", dir.path().join("admin.pem"))
        .env("RINGKV_KEY", dir.path().join("admin-key.pem"))
        .output()?;
    let listed = String::from_utf8_lossy(&members.stdout);
    ensure!(
        members.status.success(),
        "{}",
        String::from_utf8_lossy(&members.stderr)
    );
    ensure!(listed.contains(&format!("127.0.0.1:{port}")), "{listed}");
    ensure!(!listed.contains("0.0.0.0"), "{listed}");

    // A seed that does not resolve fails the build, naming it.
    let unknown = ringkv::Client::builder()
        .seed_hosts(["no-such-host.invalid:7001"])
        .tls(admin.clone())
        .build()
        .await;
    let e = unknown.expect_err("an unresolvable seed").to_string();
    ensure!(e.contains("no-such-host.invalid:7001"), "{e}");

    // A client given its seed by name finds the node, then uses the ring's announced address.
    let client = ringkv::Client::builder()
        .seed_hosts([format!("localhost:{port}")])
        .tls(admin)
        .n(1)
        .r(1)
        .w(1)
        .timeout(Duration::from_secs(5))
        .build()
        .await?;
    client.put("k", "v", &ringkv::Context::empty()).await?;
    ensure!(client.get("k").await?.values.len() == 1);
    node.terminate(Duration::from_secs(10)).await?;
    Ok(())
}
