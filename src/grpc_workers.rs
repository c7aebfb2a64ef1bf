//! The gRPC listener's connections, each served whole on one thread of its own.
//!
//! Why: Envoy sends all the `Check` calls of one of its workers over one HTTP/2 connection. On a
//! multi-thread runtime, hyper spawns each call as a task that the other threads may steal, and
//! the wake-ups of that hand-over cost more CPU than the decision itself: through one Envoy,
//! 82 µs of our CPU per `Check` on the multi-thread runtime against 63 µs with one thread
//! (`bench/envoy_filters.sh`, same run). So the accept loop deals each connection to one of
//! `threads` threads, each running a current-thread runtime: a connection, its calls and their
//! decisions never leave that thread, and the threads share nothing but the decision's state.
//!
//! The cores are still used: Envoy opens one connection per worker (per replica of ours), and
//! a new connection goes to the thread with the fewest open ones. One connection never needs
//! more than one thread: Envoy spends about three times our CPU on every `Check` it sends.
//!
//! Whatever a decision starts on its thread (a connection to Redis or the IdP, a lock's
//! renewal) keeps being driven there until the server has stopped (`release`), not just until
//! the gRPC connections have drained.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::grpc_frames::WholeWrites;
use crate::reply::escape_for_log;

/// How many threads serve gRPC connections: one per core this process may use.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// The connections dealt to one thread, as tonic's `serve_with_incoming*` takes them.
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Handoff>,
}

/// A connection on its way to its thread (a std socket: a tokio one belongs to the runtime
/// that registered it).
struct Handoff {
    stream: std::net::TcpStream,
    open: OpenGuard,
}

impl futures_util::Stream for Incoming {
    type Item = std::io::Result<WholeWrites<Conn>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|next| {
            next.map(|Handoff { stream, open }| {
                // Registered with this thread's runtime, the one polling.
                let io = TcpStream::from_std(stream)?;
                Ok(WholeWrites(Conn { io, _open: open }))
            })
        })
    }
}

/// Counts a thread's open connection until the connection is dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> OpenGuard {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection served by one thread: the socket, and its place in that thread's count.
pub struct Conn {
    io: TcpStream,
    _open: OpenGuard,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

/// One serving thread, as the accept loop sees it.
struct Worker {
    tx: mpsc::UnboundedSender<Handoff>,
    open: Arc<AtomicUsize>,
}

/// Serves `listener` on `threads` threads until `shutdown` turns true and every thread has
/// drained its connections, or until a thread stops by itself (an error: the others drain and
/// it is returned).
///
/// `serve_thread` runs on each thread, on that thread's runtime, with the connections dealt
/// to it. Its `Incoming` ends at `shutdown`, after the connections already accepted (tonic's
/// `serve_with_incoming_shutdown` then drains its connections). The threads keep driving what
/// their decisions started until `release` is dropped or changes: the caller holds it until
/// the whole server has stopped.
pub async fn serve<S, F>(
    listener: TcpListener,
    threads: NonZeroUsize,
    serve_thread: S,
    mut shutdown: watch::Receiver<bool>,
    release: watch::Receiver<()>,
) -> Result<(), String>
where
    S: Fn(Incoming) -> F + Clone + Send + 'static,
    F: Future<Output = Result<(), String>> + 'static,
{
    // Log lines written on the threads go where this task's go (the process's subscriber, or
    // a test's).
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let mut workers = Vec::with_capacity(threads.get());
    let mut done = futures_util::stream::FuturesUnordered::new();
    for n in 0..threads.get() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let serve_thread = serve_thread.clone();
        let mut release = release.clone();
        let dispatch = dispatch.clone();
        std::thread::Builder::new()
            .name(format!("oidc-authz-grpc-{n}"))
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = done_tx.send(Err(format!("cannot start a gRPC thread's runtime: {e}")));
                        return;
                    }
                };
                let served = runtime.block_on(serve_thread(Incoming { rx }));
                let _ = done_tx.send(served);
                runtime.block_on(async move { while release.changed().await.is_ok() {} });
            })
            .map_err(|e| format!("cannot start a gRPC thread: {e}"))?;
        workers.push(Worker {
            tx,
            open: Arc::new(AtomicUsize::new(0)),
        });
        done.push(done_rx);
    }

    let mut first_error = None;
    let mut turn = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            // A thread that stops before shutdown takes no more connections: stop serving.
            Some(ended) = done.next() => {
                first_error = Some(ended_early(ended));
                break;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                // Without it a multi-write answer waits for the client's delayed ACK (~40 ms).
                let _ = stream.set_nodelay(true);
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %escape_for_log(&e), "gRPC connection dropped: cannot hand it over");
                        continue;
                    }
                };
                let (index, worker) = least_busy(&workers, turn);
                turn = index + 1;
                let open = OpenGuard::new(&worker.open);
                // Only a thread that has stopped refuses; `done` ends the loop just after.
                let _ = worker.tx.send(Handoff { stream, open });
            }
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                // Out of file descriptors or memory: wait rather than spin.
                tracing::warn!(error = %escape_for_log(&e), "gRPC listener cannot accept; retrying in 100 ms");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    // Stop taking connections at once (the kernel stops completing handshakes), and end each
    // thread's `Incoming`: a thread serves what it was dealt, then drains.
    drop(listener);
    drop(workers);

    while let Some(ended) = done.next().await {
        if let Err(e) = ended.unwrap_or_else(|_| Err(GONE.to_string())) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

const GONE: &str = "a gRPC thread stopped unexpectedly";

/// Why a thread that ended before shutdown did.
fn ended_early(ended: Result<Result<(), String>, oneshot::error::RecvError>) -> String {
    match ended {
        Ok(Ok(())) => "a gRPC thread stopped serving before shutdown".to_string(),
        Ok(Err(e)) => e,
        Err(_) => GONE.to_string(),
    }
}

/// The worker with the fewest open connections; among equals, the first from `turn` on, so
/// that idle threads take turns.
fn least_busy(workers: &[Worker], turn: usize) -> (usize, &Worker) {
    let n = workers.len();
    let mut best = turn % n;
    for step in 1..n {
        let i = (turn + step) % n;
        if workers[i].open.load(Ordering::Relaxed) < workers[best].open.load(Ordering::Relaxed) {
            best = i;
        }
    }
    (best, &workers[best])
}

/// Accept errors that concern one connection only (the peer gave up): take the next one.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(open: &[usize]) -> Vec<Worker> {
        open.iter()
            .map(|&n| Worker {
                tx: mpsc::unbounded_channel().0,
                open: Arc::new(AtomicUsize::new(n)),
            })
            .collect()
    }

    #[test]
    fn a_new_connection_goes_to_the_thread_with_the_fewest() {
        assert_eq!(least_busy(&workers(&[2, 1, 3]), 0).0, 1);
        assert_eq!(least_busy(&workers(&[2, 1, 0]), 1).0, 2);
        // Equals take turns.
        assert_eq!(least_busy(&workers(&[0, 0, 0]), 0).0, 0);
        assert_eq!(least_busy(&workers(&[0, 0, 0]), 1).0, 1);
        assert_eq!(least_busy(&workers(&[0, 0, 0]), 5).0, 2);
        assert_eq!(least_busy(&workers(&[4]), 7).0, 0);
    }

    /// Each connection is served on one thread, the threads share the connections out, a
    /// connection's whole life stays on its thread, and shutdown ends every thread's serving.
    #[tokio::test]
    async fn connections_are_dealt_to_threads_and_stay_there() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let (release_tx, release) = watch::channel(());
        // Each thread answers every byte a connection sends with the name of the thread that
        // reads it, until the connection closes or the server stops.
        let serve_thread = |mut incoming: Incoming| async move {
            let mut tasks = Vec::new();
            while let Some(conn) = incoming.next().await {
                let mut conn = conn.map_err(|e| e.to_string())?;
                tasks.push(tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    while conn.read_exact(&mut byte).await.is_ok() {
                        let name = std::thread::current().name().unwrap_or("").to_string();
                        if conn.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                }));
            }
            Ok(())
        };
        let threads = NonZeroUsize::new(2).unwrap();
        let server = tokio::spawn(serve(listener, threads, serve_thread, shutdown, release));

        async fn ask(conn: &mut TcpStream) -> String {
            conn.write_all(b"?").await.unwrap();
            let mut name = Vec::new();
            let mut byte = [0u8; 1];
            while conn.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                name.push(byte[0]);
            }
            String::from_utf8(name).unwrap()
        }
        let mut conns = Vec::new();
        let mut names = Vec::new();
        for _ in 0..4 {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            names.push(ask(&mut conn).await);
            conns.push(conn);
        }
        assert!(
            names.iter().all(|n| n.starts_with("oidc-authz-grpc-")),
            "{names:?}"
        );
        for name in ["oidc-authz-grpc-0", "oidc-authz-grpc-1"] {
            assert_eq!(names.iter().filter(|n| *n == name).count(), 2, "{names:?}");
        }
        // Every later call on a connection is read by the same thread.
        for (conn, name) in conns.iter_mut().zip(&names) {
            for _ in 0..3 {
                assert_eq!(&ask(conn).await, name);
            }
        }
        // Closed connections leave their thread's count: the next two go one to each thread.
        drop(conns.drain(..2));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut later = Vec::new();
        for _ in 0..2 {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            later.push(ask(&mut conn).await);
            conns.push(conn);
        }
        later.sort();
        assert_eq!(later, ["oidc-authz-grpc-0", "oidc-authz-grpc-1"]);

        stop.send(true).unwrap();
        let served = tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
        assert_eq!(served, Ok(()));
        // The listener is closed at once.
        assert!(TcpStream::connect(addr).await.is_err());
        drop(release_tx);
    }

    /// A thread that stops by itself ends the serving at once with its error: the process must
    /// not go on without `Check`.
    #[tokio::test]
    async fn a_thread_that_stops_ends_the_serving_with_its_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, shutdown) = watch::channel(false);
        let (_release, release) = watch::channel(());
        let serve_thread = |incoming: Incoming| async move {
            let name = std::thread::current().name().unwrap_or("").to_string();
            if name.ends_with("-1") {
                drop(incoming);
                return Err("thread 1 failed".to_string());
            }
            let mut incoming = incoming;
            while incoming.next().await.is_some() {}
            Ok(())
        };
        let threads = NonZeroUsize::new(2).unwrap();
        let served = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            serve(listener, threads, serve_thread, shutdown, release),
        )
        .await
        .expect("serve returns without a shutdown");
        assert_eq!(served, Err("thread 1 failed".to_string()));
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn a_dropped_connection_leaves_the_count() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = OpenGuard::new(&open);
        let b = OpenGuard::new(&open);
        assert_eq!(open.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(open.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}
