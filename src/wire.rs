//! Counting round trips on the wire.
//!
//! [`RoundTrips`] is a TCP proxy on loopback between a client and the server.
//! It forwards bytes both ways unchanged and counts the client's `Sync` and
//! simple `Query` messages: each one asks the server for a `ReadyForQuery`,
//! so each is one round trip, however many statements it carries. It can
//! also cut its connections the way a broken network does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A counting proxy in front of a PostgreSQL server.
#[derive(Debug, Clone)]
pub struct RoundTrips {
    url: String,
    count: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
}

impl RoundTrips {
    /// Starts a proxy in front of the server of `url` (a `postgres://` URL
    /// with a host and port) and returns it; connect through [`url`](Self::url).
    ///
    /// # Panics
    ///
    /// When `url` has no `host:port` or the proxy cannot listen.
    pub async fn start(url: &str) -> RoundTrips {
        let (prefix, rest) = url.split_once('@').expect("a URL with user@host:port");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let upstream = authority.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let count = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let (counter, cutter) = (Arc::clone(&count), Arc::clone(&cut));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let (counter, cutter) = (Arc::clone(&counter), Arc::clone(&cutter));
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, counter, cutter).await;
                    }
                });
            }
        });
        // The proxy reads the protocol, so the client must not switch to TLS.
        let sep = if path.contains('?') { '&' } else { '?' };
        RoundTrips {
            url: format!("{prefix}@127.0.0.1:{port}/{path}{sep}sslmode=disable"),
            count,
            cut,
        }
    }

    /// The URL to connect through.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Round trips counted so far, on every connection through this proxy.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Cuts every connection through the proxy the way a broken network
    /// does: from now on bytes are dropped both ways and no socket is
    /// closed, so neither end hears anything until its own timeouts fire.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

async fn relay(client: TcpStream, server: TcpStream, count: Arc<AtomicU64>, cut: Arc<AtomicBool>) {
    let cut_down = Arc::clone(&cut);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut parser = FrontendParser::default();
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Counted before forwarding, so a test that reads the count
            // after its call returns has seen every message of that call.
            count.fetch_add(parser.feed(&buf[..n]), Ordering::SeqCst);
            if !cut.load(Ordering::SeqCst) && server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        if cut.load(Ordering::SeqCst) {
            // A broken network carries no close either: the server's end
            // stays open as long as the proxy runs.
            std::future::pending::<()>().await;
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !cut_down.load(Ordering::SeqCst) && client_write.write_all(&buf[..n]).await.is_err()
            {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Splits the client's byte stream into protocol messages.
#[derive(Default)]
struct FrontendParser {
    started: bool,
    pending: Vec<u8>,
}

impl FrontendParser {
    /// Consumes bytes; returns how many `Sync` and `Query` messages they
    /// completed.
    fn feed(&mut self, bytes: &[u8]) -> u64 {
        self.pending.extend_from_slice(bytes);
        let mut round_trips = 0;
        loop {
            if !self.started {
                // Untyped: SSLRequest / GSSENCRequest (answered by one byte,
                // after which the client sends another untyped message) and
                // then the StartupMessage.
                if self.pending.len() < 8 {
                    break;
                }
                let len = u32::from_be_bytes(self.pending[0..4].try_into().unwrap()) as usize;
                if self.pending.len() < len {
                    break;
                }
                let code = u32::from_be_bytes(self.pending[4..8].try_into().unwrap());
                self.pending.drain(..len);
                const SSL_REQUEST: u32 = 80_877_103;
                const GSSENC_REQUEST: u32 = 80_877_104;
                if code != SSL_REQUEST && code != GSSENC_REQUEST {
                    self.started = true;
                }
                continue;
            }
            if self.pending.len() < 5 {
                break;
            }
            let len = u32::from_be_bytes(self.pending[1..5].try_into().unwrap()) as usize;
            if self.pending.len() < len + 1 {
                break;
            }
            if matches!(self.pending[0], b'S' | b'Q') {
                round_trips += 1;
            }
            self.pending.drain(..=len);
        }
        round_trips
    }
}
