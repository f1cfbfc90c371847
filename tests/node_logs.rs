//! The node binary's output: logs in plain text without colour codes when stderr is a file,
//! one JSON object per line with `--log-format json`, stdout left to the "listening on"
//! line, and a fatal error as one line that says what is wrong.

mod support;

use anyhow::{Context as _, Result, ensure};
use std::path::Path;
use std::time::Duration;
use support::{ChildGuard, eventually, free_udp_port, node_binary, write_certs};

/// Starts one node in `dir` with `args`, stdout and stderr to separate files, and waits until
/// it listens and has logged something. Returns the process and both outputs.
async fn run_node(dir: &Path, args: &[&str]) -> Result<(ChildGuard, String, String)> {
    write_certs(dir, 1)?;
    let addr = format!("127.0.0.1:{}", free_udp_port()?);
    let config = dir.join("n1.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\nlisten = \"{addr}\"\ndata_dir = \"data\"\npartitions = 16\nreplication = 1\n\
             [tls]\nca = \"ca.pem\"\ncert = \"n1.pem\"\nkey = \"n1-key.pem\"\n\
             [[members]]\nid = 1\naddr = \"{addr}\"\n"
        ),
    )?;
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let child = std::process::Command::new(node_binary()?)
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("RINGKV_LOG_FORMAT")
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let guard = ChildGuard(Some(child));
    eventually(
        Duration::from_secs(30),
        "the node listens and logs",
        || async {
            let o = std::fs::read_to_string(&out).unwrap_or_default();
            let e = std::fs::read_to_string(&err).unwrap_or_default();
            o.contains("listening on") && e.lines().count() >= 1
        },
    )
    .await?;
    Ok((
        guard,
        std::fs::read_to_string(&out)?,
        std::fs::read_to_string(&err)?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_file_are_plain_text_on_stderr() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut node, out, err) = run_node(dir.path(), &[]).await?;
    ensure!(
        !err.contains('\u{1b}'),
        "colour codes in a log file:\n{err}"
    );
    ensure!(err.contains("INFO"), "no info line on stderr:\n{err}");
    ensure!(
        out.lines().all(|l| l.starts_with("ringkv-node ")),
        "stdout carries only the listening line:\n{out}"
    );
    node.terminate(Duration::from_secs(10)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut node, _, err) = run_node(dir.path(), &["--log-format", "json"]).await?;
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(v.get("level").is_some(), "no level: {line}");
        ensure!(v.get("timestamp").is_some(), "no timestamp: {line}");
        ensure!(v.get("fields").is_some(), "no fields: {line}");
    }
    node.terminate(Duration::from_secs(10)).await?;
    Ok(())
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_choices() -> Result<()> {
    let out = std::process::Command::new(node_binary()?)
        .args(["--log-format", "xml"])
        .output()?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains("--log-format") && err.contains("text") && err.contains("json"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_a_data_directory_in_use_says_so_in_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut first, _, _) = run_node(dir.path(), &[]).await?;
    let second = std::process::Command::new(node_binary()?)
        .arg("--config")
        .arg(dir.path().join("n1.toml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_udp_port()?))
        .env("RUST_BACKTRACE", "1")
        .output()?;
    ensure!(!second.status.success(), "the second node started");
    let err = String::from_utf8_lossy(&second.stderr);
    let fatal: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("ringkv-node:"))
        .collect();
    ensure!(fatal.len() == 1, "one fatal line:\n{err}");
    ensure!(
        fatal[0].contains("is in use by another process") && fatal[0].contains("data"),
        "{err}"
    );
    ensure!(
        !err.contains("backtrace") && !err.contains("Caused by"),
        "{err}"
    );
    first.terminate(Duration::from_secs(10)).await?;
    Ok(())
}
