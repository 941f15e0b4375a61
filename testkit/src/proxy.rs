//! A TCP proxy in front of a real service that can stall, like a network partition: while
//! frozen it keeps every connection open and accepts bytes, but forwards nothing either
//! way, so the client waits (for an answer, a confirm) instead of failing fast.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Forwards `127.0.0.1:<port>` to `upstream`; stops (closing every connection) on drop.
pub struct TcpProxy {
    addr: SocketAddr,
    frozen: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let frozen = Arc::new(watch::Sender::new(false));
        let accept = tokio::spawn({
            let frozen = frozen.clone();
            async move {
                // Owned here, so aborting the accept loop ends every connection too.
                let mut connections = JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let frozen = frozen.clone();
                    connections.spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::select! {
                            () = pump(client_read, server_write, frozen.subscribe()) => {}
                            () = pump(server_read, client_write, frozen.subscribe()) => {}
                        }
                    });
                }
            }
        });
        Ok(Self {
            addr,
            frozen,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding (bytes are held, connections stay open).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, held bytes first.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
