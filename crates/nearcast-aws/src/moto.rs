//! moto's AWS server for tests (feature `moto`): one server per test process, started on
//! first use, so that a plain `cargo test` runs the DynamoDB, SNS and S3 tests too.
//!
//! [`shared`] gives the process's server:
//!
//! - under `scripts/moto.sh` (`NEARCAST_MOTO=1`, `AWS_ENDPOINT_URL` set): that server;
//! - otherwise one of its own: `scripts/moto.sh --python` installs the pinned moto into the
//!   project's `.venv` (once; later runs reuse it), then `scripts/moto_server.py` is started on
//!   a free loopback port and [`shared`] waits until it answers. The server exits with the
//!   test process, however that ends: it watches its standard input, a pipe whose only
//!   write end this process holds, and the kernel closes it when the process exits.
//!
//! If no server can be had, [`shared`] panics with the reason and how to run the tests, so a
//! test that needs AWS fails instead of passing without having run.
//!
//! Nothing here sets environment variables (the workspace forbids `unsafe`): clients are
//! built from [`Moto::sdk_config`] (explicit endpoint, region and test credentials), and
//! child processes get [`Moto::env`].

use crate::SdkConfig;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long one request to moto may take before the SDK gives up on it (see
/// [`Moto::sdk_config`]).
pub const MOTO_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The region the tests use.
pub const REGION: &str = "us-east-1";

/// How long a fresh server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// moto's server, as the tests of this process reach it.
pub struct Moto {
    endpoint: String,
    /// The server this process started (`None`: one of `scripts/moto.sh`). Never dropped: it
    /// lives as long as the process, and exits when the process does.
    _server: Option<Mutex<Child>>,
}

/// The process's moto server, started on first use.
///
/// # Panics
/// When no server can be started, with the reason and how to run the tests.
pub fn shared() -> &'static Moto {
    static SHARED: OnceLock<Result<Moto, String>> = OnceLock::new();
    match SHARED.get_or_init(Moto::start) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A program of the project's `.venv` (`python`, `cfn-lint`), installing the venv first if
/// needed (`scripts/moto.sh --python`, pinned moto and cfn-lint).
///
/// # Errors
/// When the venv cannot be installed (no `python3`, PyPI unreachable): the script's output.
pub fn venv_program(name: &str) -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let python = PYTHON.get_or_init(install_venv).clone()?;
    let program = python.with_file_name(name);
    if program.is_file() {
        Ok(program)
    } else {
        Err(format!("{} is missing from the venv", program.display()))
    }
}

fn install_venv() -> Result<PathBuf, String> {
    let script = root().join("scripts/moto.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--python")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().unwrap_or("").trim();
    if !out.status.success() || path.is_empty() {
        return Err(format!(
            "`bash scripts/moto.sh --python` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(PathBuf::from(path))
}

/// What a failing test says.
fn help(reason: &str) -> String {
    format!(
        "the AWS tests need moto's server, and none could be started: {reason}\n\
         The tests start one themselves: `scripts/moto.sh --python` installs the pinned moto \
         into .venv (the first time; needs python3 with venv and access to PyPI), then \
         scripts/moto_server.py runs on a free loopback port. To use a server of your own, \
         run the tests through `bash scripts/moto.sh cargo test ...` (it sets NEARCAST_MOTO=1 \
         and AWS_ENDPOINT_URL)."
    )
}

impl Moto {
    fn start() -> Result<Moto, String> {
        if std::env::var_os("NEARCAST_MOTO").is_some() {
            return match std::env::var("AWS_ENDPOINT_URL") {
                Ok(url) if !url.trim().is_empty() => Ok(Moto {
                    endpoint: url.trim().trim_end_matches('/').to_string(),
                    _server: None,
                }),
                _ => Err(help("NEARCAST_MOTO is set but AWS_ENDPOINT_URL is not")),
            };
        }
        let python = venv_program("python").map_err(|e| help(&e))?;
        // A port picked free can be taken before moto binds it: try again on another.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match spawn(&python) {
                Ok(m) => return Ok(m),
                Err(e) => failures.push(e),
            }
        }
        Err(help(&failures.join("\n")))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The AWS configuration of the tests: `endpoint` (moto's own when `None`), region
    /// [`REGION`], test credentials. Nothing is read from the environment or profiles that
    /// could point elsewhere.
    ///
    /// Each request may take up to a minute ([`MOTO_ATTEMPT_TIMEOUT`]): moto answers in
    /// milliseconds when idle but in seconds while a whole test suite shares it on two cores,
    /// and the SNS client's production default of 5 s would then record slow pushes that
    /// moto did deliver as `unconfirmed`. Tests that need a timeout cut the connection
    /// through their proxy instead.
    pub async fn sdk_config(&self, endpoint: Option<&str>) -> SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(MOTO_ATTEMPT_TIMEOUT)
                    .build(),
            )
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "moto",
            ))
            .endpoint_url(endpoint.unwrap_or(&self.endpoint))
            .load()
            .await
    }

    /// A DynamoDB client to `endpoint` (moto when `None`).
    pub async fn dynamodb(&self, endpoint: Option<&str>) -> aws_sdk_dynamodb::Client {
        crate::DynamoStateStore::client_from(&self.sdk_config(endpoint).await)
    }

    /// An SNS client to `endpoint` (moto when `None`), the SDK's retries off as in
    /// [`crate::sns::SnsNotifier::client`].
    pub async fn sns(&self, endpoint: Option<&str>) -> aws_sdk_sns::Client {
        crate::sns::SnsNotifier::from_sdk_config(&self.sdk_config(endpoint).await, None, None)
            .sns()
            .clone()
    }

    /// An S3 client to `endpoint` (moto when `None`), path-style.
    pub async fn s3(&self, endpoint: Option<&str>) -> aws_sdk_s3::Client {
        crate::model_store::S3Blobs::client_from(&self.sdk_config(endpoint).await)
    }

    /// The environment that points a child process (`nearcast serve --backend aws`) at this
    /// server: endpoint, region, test credentials, `NEARCAST_MOTO=1`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", REGION.into()),
            ("NEARCAST_MOTO", "1".into()),
        ]
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// The last lines the server wrote (its log), kept by a thread that drains the pipe.
fn drain(stream: impl Read + Send + 'static) -> Arc<Mutex<VecDeque<String>>> {
    let lines = Arc::new(Mutex::new(VecDeque::new()));
    let keep = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            let mut l = keep.lock().unwrap_or_else(|e| e.into_inner());
            if l.len() == 40 {
                l.pop_front();
            }
            l.push_back(line);
        }
    });
    lines
}

fn spawn(python: &Path) -> Result<Moto, String> {
    let port = free_port()?;
    let script = root().join("scripts/moto_server.py");
    let mut child = Command::new(python)
        .arg(&script)
        .args([
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--exit-with-stdin",
        ])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", script.display()))?;
    let log = drain(child.stderr.take().expect("piped stderr"));
    let tail = || {
        let l = log.lock().unwrap_or_else(|e| e.into_inner());
        l.iter().cloned().collect::<Vec<_>>().join("\n")
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if answers(port) {
            return Ok(Moto {
                endpoint: format!("http://127.0.0.1:{port}"),
                _server: Some(Mutex::new(child)),
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "moto_server.py exited ({status}) on port {port}; its log:\n{}",
                tail()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "moto_server.py did not answer on port {port} within {} s; its log:\n{}",
                START_TIMEOUT.as_secs(),
                tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether an HTTP server answers on the port (any status).
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut sock) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    if write!(
        sock,
        "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    sock.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}
