//! Shared by the cluster tests: a real etcd on loopback (random free ports, temp data
//! dir, killed on drop) and a store URL per backend.
#![allow(dead_code)]

use ipam::cluster::{ClusterStore, StoreUrl};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Etcd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
        };
        e.spawn();
        e
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:<port>/<prefix>`
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoint())
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .arg("--name=t")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian's etcd-server) must be installed");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = StoreUrl::parse(&self.url("ready")).unwrap();
        loop {
            // On its own thread: callers may be inside a runtime.
            let ok = std::thread::scope(|sc| {
                sc.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async {
                            match ClusterStore::connect(&url).await {
                                Ok(s) => s.nodes().await.is_ok(),
                                Err(_) => false,
                            }
                        })
                })
                .join()
                .unwrap()
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The two backends every generic test body runs against.
pub enum Backend {
    File(PathBuf),
    Etcd(Etcd),
}

impl Backend {
    pub fn file(dir: &Path) -> Backend {
        Backend::File(dir.join("cluster.json"))
    }

    pub fn url(&self, prefix: &str) -> String {
        match self {
            Backend::File(p) => format!("file://{}", p.display()),
            Backend::Etcd(e) => e.url(prefix),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::File(_) => "file",
            Backend::Etcd(_) => "etcd",
        }
    }
}

pub async fn connect(url: &str) -> ClusterStore {
    ClusterStore::connect(&StoreUrl::parse(url).unwrap())
        .await
        .unwrap()
}
