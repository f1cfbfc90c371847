//! What the two binaries say about themselves: each its own name, version and purpose.

mod support;

use anyhow::{Result, ensure};
use support::{admin_binary, node_binary};

fn output(bin: std::path::PathBuf, arg: &str) -> Result<String> {
    let out = std::process::Command::new(bin).arg(arg).output()?;
    ensure!(out.status.success(), "{arg} failed: {out:?}");
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn the_admin_cli_names_itself_and_not_the_node() -> Result<()> {
    let version = output(admin_binary()?, "--version")?;
    ensure!(
        version.starts_with(&format!("ringkv {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let help = output(admin_binary()?, "--help")?;
    ensure!(
        help.contains("admin CLI") && !help.contains("storage node"),
        "{help}"
    );
    Ok(())
}

#[test]
fn the_node_names_itself() -> Result<()> {
    let version = output(node_binary()?, "--version")?;
    ensure!(version.starts_with("ringkv-node "), "{version}");
    let help = output(node_binary()?, "--help")?;
    ensure!(
        help.contains("storage node") && help.contains("--log-format"),
        "{help}"
    );
    Ok(())
}
