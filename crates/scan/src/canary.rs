//! The SSRF canary: a tiny HTTP listener the scan runs on loopback. SSRF probes point URL
//! fields at it; a request arriving here is the proof that the target fetched a URL it should
//! never have reached. It answers every request with a small PNG so image fetchers finish.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::ScanError;

/// A running canary; stops when dropped.
#[derive(Debug)]
pub(crate) struct Canary {
    pub(crate) addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

/// The 8-byte PNG signature and an empty IHDR-less body: enough for a content sniffer.
const BODY: &[u8] = b"\x89PNG\r\n\x1a\nportcullis-canary";

impl Canary {
    pub(crate) async fn start() -> Result<Self, ScanError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| ScanError::Canary(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ScanError::Canary(e.to_string()))?;
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = hits.clone();
        let task = tokio::spawn(async move {
            // Bounded: the canary answers at most this many connections per scan.
            for _ in 0..256 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    break;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    let read = tokio::time::timeout(std::time::Duration::from_secs(3), async {
                        while n < buf.len() {
                            match sock.read(&mut buf[n..]).await {
                                Ok(0) | Err(_) => break,
                                Ok(k) => n += k,
                            }
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    })
                    .await;
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let line = head.lines().next().unwrap_or("").to_owned();
                    if let Ok(mut l) = log.lock() {
                        l.push(if line.is_empty() {
                            "(connection without request)".into()
                        } else {
                            line
                        });
                    }
                    if read.is_ok() {
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            BODY.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                        let _ = sock.write_all(BODY).await;
                        let _ = sock.shutdown().await;
                    }
                });
            }
        });
        Ok(Self { addr, hits, task })
    }

    /// The request line of the first request whose target contains `marker`.
    pub(crate) fn hit(&self, marker: &str) -> Option<String> {
        self.hits
            .lock()
            .ok()?
            .iter()
            .find(|l| l.contains(marker))
            .cloned()
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.task.abort();
    }
}
