//! A real ClickHouse cluster on loopback: a standalone ZooKeeper (Debian's
//! `zookeeper`, on Java) and `shards × replicas` clickhouse-server 18.16
//! processes, each with its own ports, data and `config.d` (`<zookeeper>`,
//! `<macros>` `{shard}` and `{replica}`, `<remote_servers>` with
//! `internal_replication`, `<interserver_http_host>`). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{engine_command, free_port, scratch_dir, start_service, wait_for, ClickHouse};

/// `ingestion-engine ARGS` on `config` (a file written into `dir`).
pub fn engine(dir: &Path, config: &str, args: &[&str]) -> Output {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    engine_command(&path, "127.0.0.1:1", free_port())
        .args(args)
        .output()
        .unwrap()
}

/// Its stdout, once it succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster's name in `<remote_servers>`.
pub const CLUSTER: &str = "acc";

/// A standalone ZooKeeper, restartable on its port and data.
pub struct ZooKeeper {
    pid: Option<u32>,
    pub port: u16,
    dir: PathBuf,
}

impl ZooKeeper {
    pub fn start(dir: &Path) -> ZooKeeper {
        let mut z = ZooKeeper {
            pid: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        z.spawn();
        z
    }

    fn spawn(&mut self) {
        let args = format!("{} '{}'", self.port, self.dir.display());
        self.pid = Some(start_service("start_zookeeper", &args));
    }

    /// Kills it (`kill -9`) and waits for its port to close.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let port = self.port;
            wait_for("zookeeper to stop", Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            });
        }
    }

    /// Stops it and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// `shards × replicas` ClickHouse nodes over one ZooKeeper.
pub struct Cluster {
    /// Dropped after the nodes (fields drop in order): a node that loses
    /// ZooKeeper while it runs may crash, which is no test's business.
    pub nodes: Vec<Vec<ClickHouse>>,
    pub zookeeper: ZooKeeper,
}

impl Cluster {
    /// Starts ZooKeeper, then every node (ZooKeeper first: a node with
    /// replicated tables that cannot reach it exits).
    pub fn start(shards: usize, replicas: usize) -> Cluster {
        let dir = scratch_dir("cluster");
        let zookeeper = ZooKeeper::start(&dir.join("zookeeper"));
        let ports: Vec<Vec<(u16, u16)>> = (0..shards)
            .map(|_| (0..replicas).map(|_| (free_port(), free_port())).collect())
            .collect();
        let remote: String = ports
            .iter()
            .map(|shard| {
                let replicas: String = shard
                    .iter()
                    .map(|(_, tcp)| {
                        format!("<replica><host>127.0.0.1</host><port>{tcp}</port></replica>")
                    })
                    .collect();
                format!(
                    "<shard><internal_replication>true</internal_replication>{replicas}</shard>"
                )
            })
            .collect();
        let mut nodes = Vec::new();
        for (s, shard) in ports.iter().enumerate() {
            let mut row = Vec::new();
            for (r, &(http, tcp)) in shard.iter().enumerate() {
                let node_dir = dir.join(format!("s{}r{}", s + 1, r + 1));
                std::fs::create_dir_all(&node_dir).unwrap();
                let xml = node_dir.join("cluster.xml");
                std::fs::write(
                    &xml,
                    format!(
                        "<yandex>\n\
                         <zookeeper><node><host>127.0.0.1</host><port>{zk}</port></node>\
                         <session_timeout_ms>10000</session_timeout_ms></zookeeper>\n\
                         <macros><shard>{shard:02}</shard><replica>r{replica}</replica></macros>\n\
                         <interserver_http_host>127.0.0.1</interserver_http_host>\n\
                         <remote_servers><{CLUSTER}>{remote}</{CLUSTER}></remote_servers>\n\
                         </yandex>\n",
                        zk = zookeeper.port,
                        shard = s + 1,
                        replica = r + 1,
                    ),
                )
                .unwrap();
                row.push(ClickHouse::node(&node_dir, http, tcp, xml));
            }
            nodes.push(row);
        }
        // Started together: each takes about a second.
        std::thread::scope(|scope| {
            for node in nodes.iter_mut().flatten() {
                scope.spawn(move || node.start_again());
            }
        });
        // Each node's ZooKeeper session up before any test asks for
        // distributed DDL: 18.16 crashes on one that arrives first (a null
        // ZooKeeper client in `createImpl`).
        for node in nodes.iter().flatten() {
            wait_for(
                "the node's ZooKeeper session",
                Duration::from_secs(60),
                || {
                    node.client()
                    .query("SELECT count() FROM system.zookeeper WHERE path = '/' FORMAT TabSeparated")
                    .is_ok()
                },
            );
        }
        Cluster { nodes, zookeeper }
    }

    /// Node `replica` of shard `shard` (both from 0).
    pub fn node(&self, shard: usize, replica: usize) -> &ClickHouse {
        &self.nodes[shard][replica]
    }

    pub fn node_mut(&mut self, shard: usize, replica: usize) -> &mut ClickHouse {
        &mut self.nodes[shard][replica]
    }

    /// The first node's URL (`clickhouse.url`).
    pub fn url(&self) -> String {
        self.nodes[0][0].url()
    }

    /// The `[clickhouse]` section of an engine on this cluster.
    pub fn config_section(&self) -> String {
        let mut out = format!(
            "[clickhouse]\nurl = \"{}\"\ndatabase = \"overwatch\"\ncluster = \"{CLUSTER}\"\n",
            self.url()
        );
        for shard in &self.nodes {
            let urls: Vec<String> = shard.iter().map(|n| format!("\"{}\"", n.url())).collect();
            out.push_str(&format!(
                "[[clickhouse.shards]]\nreplicas = [{}]\n",
                urls.join(", ")
            ));
        }
        out
    }

    /// Every node, with its shard and replica (from 0).
    pub fn each(&self) -> impl Iterator<Item = (usize, usize, &ClickHouse)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(s, row)| row.iter().enumerate().map(move |(r, n)| (s, r, n)))
    }
}
