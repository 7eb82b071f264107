//! Real services some tests run next to the server, each a child process in its own temporary
//! directory, stopped when its guard drops (also when the test fails).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tenantry-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn require(binary: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{binary} is not installed: `make test` installs it (apt-get install {package})");
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not start within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A throwaway redis-server on a Unix socket (no port to collide on), persisting nothing.
pub struct Redis {
    child: Child,
    dir: PathBuf,
}

impl Redis {
    pub fn start() -> Redis {
        require("redis-server", "redis-server");
        let dir = scratch_dir("redis");
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        wait_until("redis-server", || socket.exists());
        Redis { child, dir }
    }

    /// A throwaway redis-server speaking TLS only, as managed Redis with in-transit encryption:
    /// its certificate (for `localhost`) from the tests' CA in `TEST_TLS_DIR` (.dev/tls.sh), and
    /// clients must present a certificate from the same CA. Returns it and its port.
    pub fn start_tls() -> (Redis, u16) {
        require("redis-server", "redis-server");
        let tls = std::env::var("TEST_TLS_DIR")
            .unwrap_or_else(|_| panic!("TEST_TLS_DIR is not set: run the tests with `make test`"));
        let dir = scratch_dir("redis-tls");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "yes"])
            .args([
                "--tls-cert-file",
                &format!("{tls}/server.crt"),
                "--tls-key-file",
                &format!("{tls}/server.key"),
            ])
            .args(["--tls-ca-cert-file", &format!("{tls}/ca.crt")])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server with TLS");
        wait_until("redis-server (TLS)", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        (Redis { child, dir }, port)
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.dir.join("redis.sock").display())
    }

    /// A direct connection, to look at what the server stored.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    /// Stops the server now (an outage).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
