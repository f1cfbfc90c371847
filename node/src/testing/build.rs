//! Bringing the `ringkv-node` binaries up to date from a test or benchmark process.

use std::process::Command;

/// Runs `cargo build -p ringkv-node --bins`, quietly: with `--release` if `release` (the
/// production binary, for benchmarks), else with `--features testing` (the binary the fault
/// suite runs, which follows the fault file and so matches what `cargo test` builds). Cargo
/// does nothing when the binaries are current, so a test or benchmark never runs a node
/// binary older than the code beside it. Returns whether the build succeeded.
///
/// Cargo sets per-target variables (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...) for the process
/// it runs; they are removed here, because a build script that reads one (ring's reads
/// `CARGO_MANIFEST_DIR`) would otherwise see it differ between this build and the user's own
/// `cargo test` or `cargo bench`, and each would rebuild half the dependency tree after the
/// other.
pub fn build_node_binaries(release: bool) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*name,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            build.env_remove(&*name);
        }
    }
    build.args(["build", "--quiet", "-p", "ringkv-node", "--bins"]);
    if release {
        build.arg("--release");
    } else {
        build.args(["--features", "testing"]);
    }
    build.status().is_ok_and(|s| s.success())
}
