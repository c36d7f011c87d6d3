//! A Redis that fails over: a primary, a live replica and a real Redis Sentinel (the
//! `redis-server` binary in sentinel mode). The primary is killed under an `ml-api serve`
//! replica configured with `--redis-sentinels`: serving never stops, and writes resume on the
//! promoted replica without restarting ml-api.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    child::ServerProcess,
    helpers::{repo_path, seed_record},
    ports::free_port,
    redis_server::RedisServer,
    upload::tiny_form,
};

/// `redis-server --sentinel` watching `master` as `mymaster` (quorum 1, down after 1 s).
struct Sentinel {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Sentinel {
    fn start(master: &RedisServer) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("ml-api-sentinel-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 10000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.display(),
                master.port
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs in sentinel mode");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the sentinel did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, dir, child }
    }

    async fn ask(&self, command: &mut redis::Cmd) -> redis::Value {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        command.query_async(&mut connection).await.unwrap()
    }

    /// The master's port, as the sentinel names it now.
    async fn master_port(&self) -> u16 {
        let answer = self
            .ask(
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg("mymaster"),
            )
            .await;
        let (_host, port): (String, String) = redis::from_redis_value(answer).unwrap();
        port.parse().unwrap()
    }

    async fn replicas_known(&self) -> usize {
        let answer = self
            .ask(redis::cmd("SENTINEL").arg("replicas").arg("mymaster"))
            .await;
        match answer {
            redis::Value::Array(replicas) => replicas.len(),
            _ => 0,
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut test: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !test().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upload(client: &reqwest::Client, replica: &ServerProcess) -> reqwest::Response {
    client
        .post(replica.url("/models/upload"))
        .multipart(tiny_form("colours"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replica_behind_sentinel_serves_through_a_primary_failure_and_writes_to_the_promoted_replica(
) {
    let mut primary = RedisServer::start();
    let port = primary.port.to_string();
    let replica_redis = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let sentinel = Sentinel::start(&primary);
    wait_until(
        "the sentinel found the replica",
        Duration::from_secs(30),
        || async { sentinel.replicas_known().await == 1 },
    )
    .await;

    let env = vec![
        ("ML_API_REGISTRY", "redis".to_owned()),
        // With sentinels, the URL only gives the password and database.
        ("ML_API_REDIS_URL", "redis://unused:1/0".to_owned()),
        (
            "ML_API_REDIS_SENTINELS",
            format!("127.0.0.1:{}", sentinel.port),
        ),
        ("ML_API_REDIS_SENTINEL_MASTER", "mymaster".to_owned()),
        ("ML_API_REDIS_PREFIX", "ha".to_owned()),
        ("ML_API_REDIS_OP_TIMEOUT", "1s".to_owned()),
        ("ML_API_INFERENCE_WORKERS", "1".to_owned()),
    ];
    let ml_api = ServerProcess::start(&[], &env).await;
    let client = reqwest::Client::new();
    let first = upload(&client, &ml_api).await;
    assert_eq!(
        first.status(),
        201,
        "writes go to the primary the sentinel names"
    );
    let first: Value = first.json().await.unwrap();
    // Everything written so far is on the replica before the primary dies.
    let primary_client = redis::Client::open(primary.url()).unwrap();
    let mut primary_connection = primary_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let synced: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(200)
            .query_async(&mut primary_connection)
            .await
            .unwrap();
        if synced == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the replica caught up");
    }

    let golden: Vec<Value> = serde_json::from_slice(
        &std::fs::read(repo_path("tests/fixtures/models/tiny/golden.json")).unwrap(),
    )
    .unwrap();
    let loaded = client
        .post(ml_api.url("/models/colours/predict"))
        .json(&golden[0]["record"])
        .send()
        .await
        .unwrap();
    assert_eq!(
        loaded.status(),
        200,
        "the upload is loaded by a first request"
    );

    primary.stop();
    // Serving goes on while the sentinel notices and promotes the replica.
    let mut served = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sentinel.master_port().await != replica_redis.port {
        assert!(
            Instant::now() < deadline,
            "the sentinel promoted the replica"
        );
        let predict = client
            .post(ml_api.url("/predict"))
            .json(&seed_record())
            .send()
            .await
            .unwrap();
        assert_eq!(
            predict.status(),
            200,
            "the default model serves during the failover"
        );
        let by_name = client
            .post(ml_api.url("/models/colours/predict"))
            .json(&golden[0]["record"])
            .send()
            .await
            .unwrap();
        assert_eq!(
            by_name.status(),
            200,
            "a loaded model serves during the failover"
        );
        served += 1;
    }
    assert!(served > 0);

    // Writes resume on the promoted replica, without restarting ml-api.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second: Value = loop {
        let response = upload(&client, &ml_api).await;
        if response.status() == 201 {
            break response.json().await.unwrap();
        }
        assert_eq!(
            response.status(),
            503,
            "a write before the switch is unavailable"
        );
        assert!(
            Instant::now() < deadline,
            "a write succeeded after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        second["version"], 2,
        "the first upload survived the failover"
    );
    let promoted = redis::Client::open(replica_redis.url()).unwrap();
    let mut promoted = promoted.get_multiplexed_async_connection().await.unwrap();
    for id in [&first["model_id"], &second["model_id"]] {
        let key = format!("ha:model:{}", id.as_str().unwrap());
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut promoted)
            .await
            .unwrap();
        assert!(exists, "{key} is on the promoted replica");
    }
    assert_eq!(
        client
            .get(ml_api.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
