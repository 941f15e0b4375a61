//! [`RegistryGate`]: an HTTP forwarder in front of a registry that can hold requests
//! whose path contains a given text until released, to catch the code under test in the
//! middle of its registry requests (what does it hold meanwhile? what if another process
//! writes in between?). Everything else is passed through unchanged, headers included,
//! so the registry's access log still tells who asked what.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Request heads larger than this are refused (the code under test sends small ones).
const MAX_HEAD_BYTES: usize = 64 << 10;

pub struct RegistryGate {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    /// Requests whose path contains this wait.
    hold: watch::Sender<Option<String>>,
    held: AtomicUsize,
}

impl RegistryGate {
    /// Forwards to `upstream` (`http://host:port[/prefix]`, as `TestRegistry::url`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = reqwest::Url::parse(upstream)?;
        let prefix = upstream.path().trim_end_matches('/').to_owned();
        let shared = Arc::new(Shared {
            upstream: format!(
                "{}://{}",
                upstream.scheme(),
                upstream.host_str().context("upstream without host")?
            ) + &upstream.port().map(|p| format!(":{p}")).unwrap_or_default(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            hold: watch::channel(None).0,
            held: AtomicUsize::new(0),
        });
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = serve(stream, &shared).await;
                    });
                }
            }
        });
        Ok(Self {
            url: format!("http://{addr}{prefix}"),
            shared,
            task,
        })
    }

    /// What the code under test is configured with instead of the registry's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, requests whose path contains `path_contains` wait for `release`.
    pub fn hold(&self, path_contains: &str) {
        self.shared
            .hold
            .send_replace(Some(path_contains.to_owned()));
    }

    /// Lets every held request (and later ones) through.
    pub fn release(&self) {
        self.shared.hold.send_replace(None);
    }

    /// Requests waiting right now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests are held.
    pub async fn until_held(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.held() < n {
            if Instant::now() > deadline {
                bail!(
                    "{} requests held after {timeout:?}, expected {n}",
                    self.held()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

impl Drop for RegistryGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: requests in turn (keep-alive), each forwarded once the gate allows.
async fn serve(stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut head = Vec::new();
        loop {
            let before = head.len();
            read.read_until(b'\n', &mut head).await?;
            if head.len() == before {
                return Ok(()); // closed
            }
            if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
                break;
            }
            if head.len() > MAX_HEAD_BYTES {
                bail!("request head too large");
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_owned();
        let target = first.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        let mut length = 0usize;
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await?;

        let path = target.split('?').next().unwrap_or_default().to_owned();
        let mut gate = shared.hold.subscribe();
        let must_wait = |hold: &Option<String>| hold.as_ref().is_some_and(|h| path.contains(h));
        if must_wait(&gate.borrow()) {
            shared.held.fetch_add(1, Ordering::SeqCst);
            let _ = gate.wait_for(|hold| !must_wait(hold)).await;
            shared.held.fetch_sub(1, Ordering::SeqCst);
        }

        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let is_head = method == reqwest::Method::HEAD;
        let mut request = shared
            .client
            .request(method, format!("{}{target}", shared.upstream))
            .body(body);
        for (name, value) in &headers {
            let skip = ["host", "connection", "content-length", "transfer-encoding"];
            if !skip.iter().any(|s| name.eq_ignore_ascii_case(s)) {
                request = request.header(name, value);
            }
        }
        let response = request.send().await?;
        let status = response.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut upstream_length = None;
        for (name, value) in response.headers() {
            let name = name.as_str();
            if name.eq_ignore_ascii_case("content-length") {
                upstream_length = value.to_str().ok().map(str::to_owned);
                continue;
            }
            if ["connection", "transfer-encoding", "keep-alive"].contains(&name) {
                continue;
            }
            out.push_str(&format!(
                "{name}: {}\r\n",
                value.to_str().unwrap_or_default()
            ));
        }
        let bytes = response.bytes().await?;
        let length = if is_head {
            upstream_length.unwrap_or_else(|| "0".into())
        } else {
            bytes.len().to_string()
        };
        out.push_str(&format!("content-length: {length}\r\n\r\n"));
        write.write_all(out.as_bytes()).await?;
        if !is_head {
            write.write_all(&bytes).await?;
        }
        write.flush().await?;
    }
}
