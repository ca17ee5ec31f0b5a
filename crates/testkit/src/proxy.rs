//! A TCP proxy on loopback in front of a real server, which a test can cut and restore: a
//! dependency "goes down" for one service under test without stopping the stack's shared
//! server that other tests are using.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// While cut, every open connection is dropped and new ones are closed at once.
pub struct FaultProxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    _thread: std::thread::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding 127.0.0.1:<free port> to `upstream` on a thread of its own.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let down = Arc::new(AtomicBool::new(false));
        let (cuts, cut) = watch::channel(0u64);
        let is_down = down.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let Ok((client, _)) = listener.accept().await else { continue };
                    if is_down.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut cut = cut.clone();
                    cut.mark_unchanged();
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            });
        });
        Self { addr, down, cuts, _thread: thread }
    }

    /// The dependency is down: open connections drop, new ones are closed.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The dependency is back.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
