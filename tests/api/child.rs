//! The real `ml-api` binary as a child process (serve or worker), killed if a test ends
//! early. Its JSON logs tell the address it bound (port 0).

use std::{
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

use crate::helpers::repo_path;

pub struct ServerProcess {
    child: Child,
    pub base: String,
    /// Every line the process wrote so far (stdout and stderr).
    logs: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// `ml-api serve` on a free loopback port (gRPC on another), rate limiting off.
    pub async fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut all = vec![
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--rate-limit",
            "false",
        ];
        all.extend_from_slice(args);
        Self::spawn(&all, env, "serving").await
    }

    /// `ml-api worker` with its metrics on a free loopback port.
    pub async fn worker(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut all = vec!["worker", "--metrics-addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::spawn(&all, env, "worker metrics").await
    }

    /// Runs `ml-api <args>` and waits for the log line `marker` that carries `addr`.
    async fn spawn(args: &[&str], env: &[(&str, String)], marker: &'static str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ml-api"));
        command
            .args(["--log-format", "json"])
            .args(args)
            .env(
                "ORT_DYLIB_PATH",
                repo_path(".ort/lib/libonnxruntime.so.1.31.1"),
            )
            .env("RUST_LOG", "info,ort=warn")
            .current_dir(repo_path(""))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("ml-api starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr_logs = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                stderr_logs.lock().expect("log lock").push(line);
            }
        });
        let (addr_tx, addr_rx) = oneshot::channel();
        let stdout_logs = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                stdout_logs.lock().expect("log lock").push(line.clone());
                if let Ok(log) = serde_json::from_str::<Value>(&line) {
                    if log["message"] == marker {
                        if let (Some(tx), Some(addr)) = (addr_tx.take(), log["addr"].as_str()) {
                            let _ = tx.send(addr.to_owned());
                        }
                    }
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx)
            .await
            .expect("ml-api logs its address within 60 s")
            .expect("ml-api logs its address");
        Self {
            child,
            base: format!("http://{addr}"),
            logs,
        }
    }

    /// The process id (until it has been waited for).
    pub fn pid(&self) -> u32 {
        self.child
            .id()
            .expect("the process has not been waited for")
    }

    /// The lines the process has written so far (stdout and stderr).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// The address the gRPC listener bound (its log line follows the HTTP listener's).
    pub async fn grpc_addr(&self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let bound = self.logs().iter().find_map(|line| {
                let log = serde_json::from_str::<Value>(line).ok()?;
                (log["message"] == "serving gRPC")
                    .then(|| log["addr"].as_str().map(str::to_owned))
                    .flatten()
            });
            if let Some(addr) = bound {
                return addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ml-api logs its gRPC address within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL: the process dies at once, mid-work.
    pub async fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait().await;
    }

    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("ml-api exits in time")
            .expect("exit status")
    }
}
