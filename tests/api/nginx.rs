//! A real nginx on a free loopback port, running the repository's ingress configuration
//! (`deploy/nginx/nginx.conf`) rewritten for loopback the way `scripts/lib/cluster.sh`
//! `render_nginx` does: listen address, one upstream line per replica, `/tmp/` paths moved
//! into a temporary directory. Stopped by PID when dropped.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::helpers::repo_path;

pub struct Nginx {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
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

/// The ingress configuration with `upstreams` (loopback ports) as its replicas.
fn render(dir: &Path, listen: u16, upstreams: &[u16]) -> String {
    let source = std::fs::read_to_string(repo_path("deploy/nginx/nginx.conf")).unwrap();
    let is_replica = |line: &str| {
        let line = line.trim_start();
        line.starts_with("server predictor-") && line.contains(":5001")
    };
    let template = source
        .lines()
        .find(|line| is_replica(line))
        .expect("deploy/nginx/nginx.conf has `server predictor-N:5001` upstream lines");
    let (indent, rest) = template.split_at(template.len() - template.trim_start().len());
    let options = rest.split_once(';').map_or("", |(server, _)| {
        server.split_once(' ').map_or("", |(_, address)| {
            address.split_once(' ').map_or("", |(_, options)| options)
        })
    });
    let mut rendered = String::new();
    let mut replaced = false;
    for line in source.lines() {
        if is_replica(line) {
            if !replaced {
                for port in upstreams {
                    rendered.push_str(&format!("{indent}server 127.0.0.1:{port} {options};\n"));
                }
                replaced = true;
            }
            continue;
        }
        rendered.push_str(line);
        rendered.push('\n');
    }
    let dir = format!("{}/", dir.display());
    let rendered = rendered
        .replace("/tmp/", &dir)
        .replace("listen 8080;", &format!("listen 127.0.0.1:{listen};"))
        .replace("access_log /dev/stdout", "access_log off; #");
    assert!(rendered.contains(&format!("listen 127.0.0.1:{listen};")));
    assert!(!rendered.contains("predictor-"), "{rendered}");
    rendered
}

impl Nginx {
    /// nginx in front of `upstreams`; returns once it accepts connections.
    pub fn start(upstreams: &[u16]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("ml-api-nginx-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("nginx dir");
        std::fs::write(dir.join("nginx.conf"), render(&dir, port, upstreams)).unwrap();
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
        Self { port, dir, child }
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
