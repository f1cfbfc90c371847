//! Backup and restore of a running node, with real processes and the real commands:
//! `ringkv backup` while clients write, `ringkv-node restore` into a wiped data directory, and
//! anti-entropy bringing the restored node up to date with nothing lost and no delete undone.

mod support;

use anyhow::{Context as _, Result, ensure};
use ringkv::{CallOptions, Context};
use std::time::Duration;
use support::eventually;
use support::real::RealCluster;

const TABLES: &str = "[background]\nae_interval_ms = 200\ngossip_interval_ms = 250\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_a_backup_catches_up_with_nothing_lost() -> Result<()> {
    let mut cluster = RealCluster::start(3, TABLES)?;
    let c = cluster.client().await?;
    let all = CallOptions::default().quorum(3);
    for i in 0..200 {
        c.put_with(format!("before-{i}"), "v1", &Context::empty(), all)
            .await?;
    }

    // Backed up while a writer keeps going.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                c.put(format!("during-{i}"), "v", &Context::empty()).await?;
            }
            anyhow::Ok(())
        })
    };
    let backup = cluster.dir().join("backup-n3");
    let said = cluster.admin(2, &["backup", backup.to_str().context("utf-8 path")?])?;
    ensure!(
        said.contains("backed up") && said.contains("objects"),
        "{said}"
    );
    writer.await??;
    let again = cluster.admin(2, &["backup", backup.to_str().context("utf-8 path")?]);
    ensure!(
        again.is_err(),
        "a backup never overwrites another: {again:?}"
    );

    // After the backup: new keys, and deletes of keys the backup holds.
    for i in 0..100 {
        c.put(format!("after-{i}"), "v", &Context::empty()).await?;
    }
    for i in 0..50 {
        let key = format!("before-{i}");
        let read = c.get(key.clone()).await?;
        c.delete_with(key, &read.context, all).await?;
    }

    // Node 3 loses its disk and is restored from the backup.
    cluster.kill(2)?;
    std::fs::remove_dir_all(cluster.dir().join("data/n3"))?;
    let node_bin = support::node_binary()?;
    let restore = std::process::Command::new(&node_bin)
        .args(["restore", "--config"])
        .arg(cluster.dir().join("n3.toml"))
        .arg("--from")
        .arg(&backup)
        .output()?;
    ensure!(
        restore.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    ensure!(String::from_utf8_lossy(&restore.stdout).contains("restored"));
    // What the backup held, and nothing written after it.
    {
        let opts = ringkv_node::storage::StoreOptions {
            partitions: 64,
            ..Default::default()
        };
        let restored = ringkv_node::storage::Store::open(
            &cluster.dir().join("data/n3"),
            ringkv_shared::NodeId(3),
            &opts,
        )?;
        let ring = cluster.status(0).await?.view.ring;
        let holds = |key: &str| -> Result<bool> {
            Ok(restored
                .get(ring.partition_of(key.as_bytes()), key.as_bytes())?
                .is_some_and(|o| o.values().next().is_some()))
        };
        ensure!(
            holds("before-199")? && holds("before-0")?,
            "the backup's keys"
        );
        ensure!(!holds("after-0")?, "nothing from after the backup");
        restored.close()?;
    }
    // Restoring over the restored directory is refused.
    let twice = std::process::Command::new(&node_bin)
        .args(["restore", "--config"])
        .arg(cluster.dir().join("n3.toml"))
        .arg("--from")
        .arg(&backup)
        .output()?;
    ensure!(!twice.status.success());
    ensure!(
        String::from_utf8_lossy(&twice.stderr).contains("holds files"),
        "{}",
        String::from_utf8_lossy(&twice.stderr)
    );
    cluster.restart(2)?;

    // Anti-entropy brings node 3's own copy up to date: every key written, every delete.
    eventually(Duration::from_secs(90), "node 3 caught up", || async {
        for (prefix, n) in [("before", 200), ("during", 200), ("after", 100)] {
            for i in 0..n {
                let Ok(o) = cluster.local_object(2, &format!("{prefix}-{i}")).await else {
                    return false;
                };
                let deleted = prefix == "before" && i < 50;
                let live = o.values().next().is_some();
                if live == deleted {
                    return false;
                }
            }
        }
        true
    })
    .await?;
    // And reads at R = 3 see the same.
    for i in 0..200 {
        let v = c.get_with(format!("before-{i}"), all).await?;
        ensure!(
            v.values.is_empty() == (i < 50),
            "before-{i}: {:?}",
            v.values
        );
    }
    Ok(())
}
