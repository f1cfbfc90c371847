//! The `ringkv` admin CLI as scripts and operators use it: `status` with who answers, `--json`
//! on the read commands, plain output when stdout is not a terminal, an error that says
//! "certificate" when it is one, and a closed pipe that ends it quietly.

mod support;

use anyhow::{Context as _, Result, ensure};
use ringkv_node::certs::{DevCa, Role};
use support::real::RealCluster;

/// Starts `nodes` node processes and waits until every one answers the CLI.
fn started(nodes: u32) -> Result<RealCluster> {
    let cluster = RealCluster::start(nodes, "")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let all_up = cluster
            .admin(0, &["status", "--json"])
            .and_then(|text| json(&text))
            .map(|s| {
                s["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == nodes as usize && n.iter().all(|n| n["up"] == true))
            });
        match all_up {
            Ok(true) => return Ok(cluster),
            _ if std::time::Instant::now() > deadline => {
                anyhow::bail!("the nodes did not all answer within 30 s: {all_up:?}")
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("not one JSON document:\n{text}"))
}

#[test]
fn status_and_json_report_every_node_and_who_answers() -> Result<()> {
    let mut cluster = started(3)?;
    let text = cluster.admin(0, &["status"])?;
    ensure!(
        text.lines().filter(|l| l.contains(" yes ")).count() == 3,
        "{text}"
    );

    let status = json(&cluster.admin(0, &["status", "--json"])?)?;
    let nodes = status["nodes"].as_array().context("nodes")?;
    ensure!(nodes.len() == 3, "{status}");
    ensure!(
        nodes
            .iter()
            .all(|n| n["up"] == true && n["ring_epoch"] == 1),
        "{status}"
    );

    let members = json(&cluster.admin(0, &["members", "--json"])?)?;
    let owned: u64 = members["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter_map(|m| m["partitions"].as_u64())
        .sum();
    ensure!(owned == 64, "every partition owned once: {members}");
    let ring = json(&cluster.admin(0, &["ring", "--json"])?)?;
    ensure!(
        ring["partitions"] == 64 && ring["ring_epoch"] == 1,
        "{ring}"
    );
    let handoffs = json(&cluster.admin(0, &["handoffs", "--json"])?)?;
    ensure!(handoffs["under_way"] == false, "{handoffs}");
    // Not a terminal: plain text, not an invisible progress bar.
    let plain = cluster.admin(0, &["handoffs"])?;
    ensure!(plain.contains("no ring change under way"), "{plain:?}");

    // A node that is down is named, with the reason, and the command still succeeds.
    cluster.kill(2)?;
    let text = cluster.admin(0, &["status"])?;
    ensure!(text.contains("node 3 did not answer"), "{text}");
    let status = json(&cluster.admin(0, &["status", "--json"])?)?;
    let down: Vec<_> = status["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .filter(|n| n["up"] == false)
        .collect();
    ensure!(down.len() == 1 && down[0]["id"] == 3, "{status}");
    ensure!(down[0]["error"].is_string(), "{status}");
    Ok(())
}

#[test]
fn a_certificate_from_another_ca_is_reported_as_a_certificate_problem() -> Result<()> {
    let cluster = started(1)?;
    let stranger = DevCa::generate()?.issue(&Role::Admin, "mallory")?;
    let tls = ringkv::TlsIdentity {
        ca_pem: cluster.tls.ca_pem.clone(),
        cert_pem: stranger.cert_pem.into_bytes(),
        key_pem: stranger.key_pem.into_bytes(),
    };
    let err = cluster
        .admin_as(0, &tls, "mallory", &["members"])
        .expect_err("a stranger's certificate is refused");
    let err = format!("{err:#}");
    ensure!(err.contains("certificates"), "{err}");
    ensure!(!err.contains("cannot reach"), "{err}");
    Ok(())
}

#[test]
fn a_reader_that_goes_away_ends_the_cli_quietly() -> Result<()> {
    let cluster = started(1)?;
    let mut child = std::process::Command::new(support::admin_binary()?)
        .env("RINGKV_NODE", cluster.addrs[0].to_string())
        .env("RINGKV_CA", cluster.dir().join("ca.pem"))
        .env("RINGKV_CERT", cluster.dir().join("admin.pem"))
        .env("RINGKV_KEY", cluster.dir().join("admin-key.pem"))
        .args(["members", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    drop(child.stdout.take());
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{:?}: {err}", out.status);
    ensure!(!err.contains("panicked"), "{err}");
    Ok(())
}
