//! A real Redis Cluster for the scale-out tests: N `redis-server` masters
//! on loopback (cluster mode, persistence off), joined by
//! `redis-cli --cluster create`, each owning a third (for N = 3) of the
//! 16,384 slots. Killed on drop.
//!
//! A cluster node also listens on its port + 10,000 (the cluster bus), so
//! ports are taken below 55,536 and both are checked free first.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::redis::ensure_redis_setup;

/// The masters of a running cluster.
pub struct RedisCluster {
    children: Vec<Option<Child>>,
    /// Each node's port (masters first, as created).
    pub ports: Vec<u16>,
    dir: PathBuf,
}

/// A port whose cluster-bus twin (port + 10,000) is free too.
fn cluster_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::SeqCst) == 0 {
        // Spread test processes apart.
        let start = 21_000 + (std::process::id() % 4_000) as u16 * 5;
        let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    }
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 45_000, "no free port pair for a cluster node");
        let free = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    /// Starts `masters` nodes and makes them one cluster; returns once every
    /// node says `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with_replicas(masters, 0)
    }

    /// Starts `masters` × (1 + `replicas`) nodes; `redis-cli` gives each
    /// master `replicas` replicas.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        ensure_redis_setup();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "redis-cluster-{}-{}",
            std::process::id(),
            cluster_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut cluster = RedisCluster {
            children: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for _ in 0..masters * (1 + replicas) {
            let port = cluster_port();
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let log = std::fs::File::create(node_dir.join("redis.log")).expect("node log");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--dir")
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("run redis-server");
            cluster.children.push(Some(child));
            cluster.ports.push(port);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &cluster.ports {
            while cli(port, &["PING"]).trim() != "PONG" {
                assert!(
                    Instant::now() < deadline,
                    "cluster node {port} not answering"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        for &port in &cluster.ports {
            while !cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster never became ok");
                thread::sleep(Duration::from_millis(50));
            }
        }
        // A replica can take over only once it has its master's data: wait
        // for every replica's first sync.
        for &port in &cluster.ports {
            loop {
                let info = cli(port, &["INFO", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {port} never synced:\n{info}"
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every master: the seed nodes.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The port of the master holding `key` (a replica answers `MOVED`).
    pub fn owner_of(&self, key: &str) -> Option<u16> {
        self.live_ports()
            .find(|&p| cli(p, &["EXISTS", key]).trim() == "1")
    }

    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
    }

    /// Waits until the replicas of the master on `port` have every write
    /// it took (Redis replicates asynchronously: a master killed before
    /// that loses what its replicas had not received yet, which is Redis's
    /// own limit, not ours to test).
    pub fn wait_replicated(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = cli(port, &["INFO", "replication"]);
            let field = |name: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            let master = field("master_repl_offset:");
            // slave0:ip=…,port=…,state=online,offset=N,lag=0
            let replica = info
                .lines()
                .find(|l| l.starts_with("slave0:"))
                .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("offset=")))
                .and_then(|v| v.trim().parse::<u64>().ok());
            if master.is_some() && master == replica {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica never caught up:\n{info}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        if let Some(at) = self.ports.iter().position(|&p| p == port) {
            if let Some(mut child) = self.children.get_mut(at).and_then(Option::take) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Waits until every live node says the cluster is ok again and a
    /// live master holds `key`'s slot (after a failover: the promoted
    /// replica).
    pub fn wait_ok_owning(&self, key: &str, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            let ok = self
                .live_ports()
                .all(|p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if ok {
                if let Some(owner) = self.owner_of(key) {
                    return owner;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no failover within {within:?}:\n{}",
                self.live_ports()
                    .next()
                    .map(|p| cli(p, &["CLUSTER", "NODES"]))
                    .unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::as_mut) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
