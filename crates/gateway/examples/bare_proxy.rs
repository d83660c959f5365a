//! A bare hyper reverse proxy, for the benchmark: the floor under any gateway built on hyper
//! and tokio the way Portcullis is (one single-threaded runtime per worker with its own
//! `SO_REUSEPORT` listener, HTTP/1.1 client connections pooled per worker), with no policy
//! work at all: no routing, no headers added or removed, no timeouts, no logs, no metrics.
//!
//! ```sh
//! cargo run --release -p portcullis-gateway --example bare_proxy -- 127.0.0.1:19203 127.0.0.1:19200 2
//! ```
//!
//! `bench/run.sh` runs it beside nginx when `BARE=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    mut req: Request<Incoming>,
) -> hyper::Result<Response<Incoming>> {
    let ready = {
        let mut p = pool.borrow_mut();
        p.retain(|tx| !tx.is_closed());
        p.iter()
            .rposition(SendRequest::is_ready)
            .map(|i| p.swap_remove(i))
    };
    let mut tx = match ready {
        Some(tx) => tx,
        None => {
            let s = TcpStream::connect(upstream).await.expect("upstream");
            s.set_nodelay(true).expect("nodelay");
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
            tokio::task::spawn_local(conn);
            tx
        }
    };
    let host = HeaderValue::from_str(&upstream.to_string()).expect("host");
    req.headers_mut().insert(HOST, host);
    let resp = tx.send_request(req).await;
    pool.borrow_mut().push(tx);
    resp
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = args
        .get(1)
        .map_or("127.0.0.1:19203", String::as_str)
        .parse()
        .expect("listen address");
    let upstream: SocketAddr = args
        .get(2)
        .map_or("127.0.0.1:19200", String::as_str)
        .parse()
        .expect("upstream address");
    let workers: usize = args.get(3).map_or(Ok(2), |w| w.parse()).expect("workers");
    let listeners = portcullis_gateway::server::bind_workers(listen, workers).expect("bind");
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|std_listener| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                tokio::task::LocalSet::new().block_on(&rt, async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    let pool: Pool = Rc::default();
                    while let Ok((s, _)) = listener.accept().await {
                        let _ = s.set_nodelay(true);
                        let pool = pool.clone();
                        tokio::task::spawn_local(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                forward(pool.clone(), upstream, req)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(s), svc)
                                .await;
                        });
                    }
                });
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
