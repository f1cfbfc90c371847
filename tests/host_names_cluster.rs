//! Five nodes known only by host name. The test re-executes itself in private network and
//! mount namespaces: loopback only (nothing can leave the machine), and its own `/etc/hosts`
//! naming `n1.ringkv.test` .. `n5.ringkv.test` (127.0.0.2 .. 127.0.0.6). Every address any
//! process is given is a name: node `listen`, `advertise`, `[[members]]` and `seeds`, the
//! client's seeds, the admin CLI's `--node` and `join`. Three nodes found the cluster, two join
//! by name, and handoff moves data to them; every key written before reads back after. Then
//! node 3's name is pointed at another address and the node started there: peers, the client
//! (through the ring it cached) and the CLI find it again by resolving its name anew.

mod support;

use anyhow::{Context as _, Result, ensure};
use ringkv::{CallOptions, Context};
use ringkv_shared::proto::{AdminReply, AdminRequest, Request, Response};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;
use support::run_command as run;
use support::{ChildGuard, admin_binary, ask, eventually, node_binary, write_certs};

/// Set inside the namespaces: the hosts file to mount over `/etc/hosts`.
const INSIDE: &str = "RINGKV_HOST_NAMES_INSIDE";
const NODES: u32 = 5;

fn name(i: u32) -> String {
    format!("n{i}.ringkv.test")
}

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 1 + i as u8)
}

/// Where node 3's name points after its host moved.
const MOVED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_known_only_by_name() -> Result<()> {
    let Some(hosts) = std::env::var_os(INSIDE) else {
        return run_inside_namespaces("five_nodes_known_only_by_name");
    };
    run("ip", &["link", "set", "lo", "up"])?;
    run("mount", &["--bind", &hosts.to_string_lossy(), "/etc/hosts"])?;
    let resolved =
        ringkv_node::host_addr::resolve(&format!("{}:1", name(3))).map_err(anyhow::Error::msg)?;
    ensure!(
        resolved.ip() == ip(3),
        "the private hosts file is in use: {resolved}"
    );

    let dir = tempfile::tempdir()?;
    let admin = write_certs(dir.path(), NODES)?;
    std::fs::write(dir.path().join("admin.pem"), &admin.cert_pem)?;
    std::fs::write(dir.path().join("admin-key.pem"), &admin.key_pem)?;
    // One port per node, free on its own address.
    let ports: Vec<u16> = (1..=NODES)
        .map(|i| Ok(std::net::UdpSocket::bind((ip(i), 0))?.local_addr()?.port()))
        .collect::<Result<_>>()?;
    let host = |i: u32| format!("{}:{}", name(i), ports[i as usize - 1]);
    let members: String = (1..=3)
        .map(|i| format!("[[members]]\nid = {i}\naddr = \"{}\"\n", host(i)))
        .collect();
    let mut nodes = Vec::new();
    for i in 1..=NODES {
        // Nodes 1-3 found the cluster from their members; 4 and 5 know only a seed, by name.
        let (seeds, founders) = if i <= 3 {
            (String::new(), members.as_str())
        } else {
            (format!("seeds = [\"{}\"]\n", host(1)), "")
        };
        let config = dir.path().join(format!("n{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "id = {i}\nlisten = \"{h}\"\nadvertise = \"{h}\"\ndata_dir = \"data/n{i}\"\n\
                 partitions = 64\nreplication = 3\n{seeds}\
                 [background]\ngossip_interval_ms = 250\n\
                 [tls]\nca = \"ca.pem\"\ncert = \"n{i}.pem\"\nkey = \"n{i}-key.pem\"\n{founders}",
                h = host(i)
            ),
        )?;
        nodes.push(start_node(dir.path(), i, "")?);
    }
    let cli = |args: &[&str]| -> Result<String> {
        let out = Command::new(admin_binary()?)
            .args(["--node", &host(2)])
            .args(args)
            .env("RINGKV_CA", dir.path().join("ca.pem"))
            .env("RINGKV_CERT", dir.path().join("admin.pem"))
            .env("RINGKV_KEY", dir.path().join("admin-key.pem"))
            .output()?;
        ensure!(
            out.status.success(),
            "ringkv {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };

    // A client that knows one seed, by name.
    let client = eventually_client(&host(2), &admin).await?;
    for k in 0..200 {
        client
            .put(format!("k-{k}"), format!("v-{k}"), &Context::empty())
            .await?;
    }

    // The two newcomers join by name, through the CLI that reaches node 2 by name.
    let addr_of = |i: u32| SocketAddr::from((ip(i), ports[i as usize - 1]));
    eventually(Duration::from_secs(30), "node 2 knows all five", || async {
        status(addr_of(2), &admin)
            .await
            .is_some_and(|s| s.view.members.len() == NODES as usize)
    })
    .await?;
    cli(&["join", &host(4)])?;
    cli(&["join", &host(5)])?;
    cli(&["commit"])?;
    eventually(
        Duration::from_secs(120),
        "ring epoch 2 in force on all five",
        || async {
            for i in 1..=NODES {
                match status(addr_of(i), &admin).await {
                    Some(s) if s.view.ring.epoch() == 2 && s.view.transition.is_none() => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await?;

    // Every node announced the address its name resolves to, and the ring holds all five.
    let view = status(addr_of(5), &admin)
        .await
        .context("node 5's status")?
        .view;
    for i in 1..=NODES {
        let id = ringkv_shared::NodeId(i);
        ensure!(
            view.members.get(&id).map(|r| r.addr) == Some(addr_of(i)),
            "node {i}: {:?}",
            view.members.get(&id)
        );
        ensure!(view.ring.member(id).is_some(), "node {i} owns partitions");
    }
    let listed = cli(&["members"])?;
    ensure!(listed.matches(" up ").count() == NODES as usize, "{listed}");
    for k in 0..200 {
        let got = client
            .get_with(format!("k-{k}"), CallOptions::default().quorum(2))
            .await?;
        ensure!(
            got.values == [format!("v-{k}").into_bytes()],
            "k-{k}: {:?}",
            got.values
        );
    }
    ensure!(client.ring().epoch() == 2);

    // Node 3's host moves: its name now resolves to another address, where it starts again
    // with its disk. Nobody is told but the hosts file; the ring keeps the old address.
    nodes[2].terminate(Duration::from_secs(20)).await?;
    let moved = SocketAddr::from((MOVED, ports[2]));
    let hosts = std::fs::read_to_string("/etc/hosts")?;
    std::fs::write(
        "/etc/hosts",
        hosts.replace(
            &format!("{} {}\n", ip(3), name(3)),
            &format!("{MOVED} {}\n", name(3)),
        ),
    )?;
    nodes[2] = start_node(dir.path(), 3, "-moved")?;
    // Gossip: the node announces its new address and every peer reaches it there.
    eventually(
        Duration::from_secs(60),
        "every node sees node 3 up at its new address",
        || async {
            for i in [1, 2, 4, 5] {
                let Some(s) = status(addr_of(i), &admin).await else {
                    return false;
                };
                let r = s.view.members.get(&ringkv_shared::NodeId(3));
                if r.is_none_or(|r| r.addr != moved) {
                    return false;
                }
            }
            status(moved, &admin).await.is_some()
        },
    )
    .await
    .with_context(|| logs(dir.path(), &["n3-moved", "n1"]))?;
    let three = client
        .ring()
        .member(ringkv_shared::NodeId(3))
        .cloned()
        .context("node 3 in the client's ring")?;
    ensure!(
        three.addr == addr_of(3) && three.host.as_ref().map(|h| h.to_string()) == Some(host(3)),
        "the ring still holds node 3's old address, with its name: {three:?}"
    );
    // The client reaches node 3 through the ring's member, by its name.
    eventually(
        Duration::from_secs(30),
        "the client reaches node 3",
        || async {
            client
                .stats()
                .await
                .iter()
                .any(|(id, s)| id.0 == 3 && s.is_ok())
        },
    )
    .await?;
    // Replicas written now reach node 3 (from the client or from the nodes that coordinate
    // or hold hints, all of which know it by the ring's member), and so does the CLI.
    for k in 200..400 {
        client
            .put(format!("k-{k}"), format!("v-{k}"), &Context::empty())
            .await?;
    }
    let ring = client.ring();
    let held_by_three = (0..400)
        .filter(|k| {
            ring.preference_list_for_key(format!("k-{k}").as_bytes())[..3]
                .contains(&ringkv_shared::NodeId(3))
        })
        .count() as u64;
    eventually(
        Duration::from_secs(60),
        "node 3 holds every key it replicates",
        || async {
            client.stats().await.iter().any(|(id, s)| {
                id.0 == 3
                    && s.as_ref()
                        .is_ok_and(|s| s.objects >= held_by_three && s.hints_pending == 0)
            })
        },
    )
    .await?;
    let seen: serde_json::Value = serde_json::from_str(&cli(&["status", "--json"])?)?;
    let node3 = seen["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == 3))
        .context("node 3 in `ringkv status`")?;
    ensure!(
        node3["up"] == true && node3["addr"].as_str().is_some_and(|a| a.contains(&host(3))),
        "{node3}"
    );
    for node in &mut nodes {
        node.terminate(Duration::from_secs(20)).await?;
    }
    Ok(())
}

/// The last lines of the named logs in `dir`, for a failure's message.
fn logs(dir: &std::path::Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- {n}.log ---\n{}", tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts node `i` from its config in `dir`, logging to `n<i><log_suffix>.log`.
fn start_node(dir: &std::path::Path, i: u32, log_suffix: &str) -> Result<ChildGuard> {
    let log = std::fs::File::create(dir.join(format!("n{i}{log_suffix}.log")))?;
    let child = Command::new(node_binary()?)
        .arg("--config")
        .arg(dir.join(format!("n{i}.toml")))
        .current_dir(dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    Ok(ChildGuard(Some(child)))
}

/// Node `addr`'s status, if it answers.
async fn status(
    addr: SocketAddr,
    tls: &ringkv::TlsIdentity,
) -> Option<ringkv_shared::proto::NodeStatus> {
    match ask(
        addr,
        tls,
        &Request::Admin(AdminRequest::Status),
        Duration::from_secs(5),
    )
    .await
    {
        Ok(Response::Admin(AdminReply::Status(s))) => Some(*s),
        _ => None,
    }
}

/// A client seeded with one host name, once the cluster answers.
async fn eventually_client(seed: &str, tls: &ringkv::TlsIdentity) -> Result<ringkv::Client> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let built = ringkv::Client::builder()
            .seed_hosts([seed.to_owned()])
            .tls(tls.clone())
            .timeout(Duration::from_secs(3))
            .build()
            .await;
        match built {
            Ok(c) => return Ok(c),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e).context("the cluster never answered");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs `test` again inside new network and mount namespaces (and a user namespace when not
/// root), with the hosts file written here.
fn run_inside_namespaces(test: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let hosts = dir.path().join("hosts");
    let lines: String = (1..=NODES)
        .map(|i| format!("{} {}\n", ip(i), name(i)))
        .collect();
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{lines}"))?;
    // Built out here: the namespace has no network, and the build may want the registry.
    node_binary()?;
    admin_binary()?;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut unshare = Command::new("unshare");
    if !root {
        unshare.arg("--map-root-user");
    }
    let status = unshare
        .args(["--net", "--mount", "--"])
        .arg(std::env::current_exe()?)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, &hosts)
        .status()
        .context("running unshare (util-linux) for a private network namespace")?;
    ensure!(
        status.success(),
        "{test} failed in its private namespaces (output above)"
    );
    Ok(())
}
