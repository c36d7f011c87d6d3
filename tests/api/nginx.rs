//! A real nginx on a free loopback port, running the repository's ingress configuration
//! (`deploy/nginx/nginx.conf`) as `scripts/render-nginx.sh` rewrites it for loopback, the
//! same renderer as the local cluster's. Stopped by PID when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{helpers::repo_path, ports::free_port};

pub struct Nginx {
    pub port: u16,
    /// The gRPC (h2c) listener, when started with gRPC upstreams.
    pub grpc_port: Option<u16>,
    dir: PathBuf,
    child: Child,
}

fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|path| path.is_file())
        .expect("nginx is installed (scripts/install-test-tools.sh installs it)")
}

/// Writes `dir/nginx.conf`: the ingress configuration with `upstreams` (loopback ports) as its
/// replicas, by the renderer the local cluster uses (`scripts/render-nginx.sh`).
fn render(dir: &Path, listen: u16, upstreams: &[u16], grpc: Option<(u16, &[u16])>) {
    let mut command = Command::new("bash");
    command
        .arg(repo_path("scripts/render-nginx.sh"))
        .arg(dir)
        .arg(listen.to_string())
        .args(upstreams.iter().map(u16::to_string))
        .env("NGINX_ACCESS_LOG", "off");
    if let Some((listen, upstreams)) = grpc {
        let ports: Vec<String> = upstreams.iter().map(u16::to_string).collect();
        command
            .env("GRPC_LISTEN_PORT", listen.to_string())
            .env("GRPC_UPSTREAM_PORTS", ports.join(" "));
    }
    let status = command.status().expect("bash runs");
    assert!(
        status.success(),
        "scripts/render-nginx.sh rendered the configuration"
    );
}

impl Nginx {
    /// nginx in front of `upstreams`; returns once it accepts connections.
    pub fn start(upstreams: &[u16]) -> Self {
        Self::start_with_grpc(upstreams, &[])
    }

    /// nginx in front of `upstreams` and, when `grpc_upstreams` is not empty, of those gRPC
    /// ports on a listener of its own (`grpc_pass`).
    pub fn start_with_grpc(upstreams: &[u16], grpc_upstreams: &[u16]) -> Self {
        let port = free_port();
        let grpc_port = (!grpc_upstreams.is_empty()).then(free_port);
        let dir = std::env::temp_dir().join(format!("ml-api-nginx-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        render(
            &dir,
            port,
            upstreams,
            grpc_port.map(|listen| (listen, grpc_upstreams)),
        );
        let child = Command::new(binary())
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            grpc_port,
            dir,
            child,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM (fast shutdown) to the master, which stops its workers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
