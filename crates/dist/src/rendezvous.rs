//! Sharing a byte blob (the NCCL unique id) from rank 0 with every other rank over TCP.
//!
//! Rank 0 listens on `MASTER_ADDR:port`; every other rank connects (retrying until rank 0 is
//! up or the timeout passes), says who it is, and receives the blob. Rank 0 returns once every
//! rank has been served, so a missing rank is reported by number instead of hanging NCCL.
//!
//! Wire format (little-endian): the client sends `MAGIC`, its rank (u32) and the world size
//! (u32); the server answers a status byte (0 = ok, 1 = error) and a u32-length-prefixed
//! payload: the blob, or an error message.

use crate::env::DistEnv;
use crate::error::{DistError, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Size of an NCCL unique id (`ncclUniqueId`), the blob this module exists to carry.
pub const NCCL_UNIQUE_ID_BYTES: usize = 128;
/// Default time to wait for the other side of the rendezvous.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

const MAGIC: &[u8; 8] = b"YFRDZV01";
/// Largest payload accepted, so a stray service on the port cannot make us allocate much.
const MAX_PAYLOAD: usize = 1 << 20;

fn rdzv_err<T>(addr: impl ToString, reason: impl Into<String>) -> Result<T> {
    Err(DistError::Rendezvous {
        addr: addr.to_string(),
        reason: reason.into(),
    })
}

fn resolve(addr: &str) -> std::io::Result<Vec<SocketAddr>> {
    Ok(addr.to_socket_addrs()?.collect())
}

/// Rank 0's side: a bound listener waiting for the other ranks.
#[derive(Debug)]
pub struct RendezvousServer {
    listener: TcpListener,
    addr: String,
    world: usize,
}

impl RendezvousServer {
    /// Binds `addr` (`host:port`; port 0 picks a free one) for a job of `world` ranks.
    pub fn bind(addr: &str, world: usize) -> Result<RendezvousServer> {
        if world == 0 || world > u32::MAX as usize {
            return rdzv_err(addr, format!("world size {world} out of range"));
        }
        let listener = TcpListener::bind(addr).or_else(|e| {
            rdzv_err(
                addr,
                format!("rank 0 cannot listen: {e} (is another job using the port? set MASTER_PORT or YOLO_RDZV_PORT)"),
            )
        })?;
        listener
            .set_nonblocking(true)
            .or_else(|e| rdzv_err(addr, format!("set_nonblocking: {e}")))?;
        Ok(RendezvousServer {
            listener,
            addr: addr.to_string(),
            world,
        })
    }

    /// The address actually bound (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .or_else(|e| rdzv_err(&self.addr, format!("local_addr: {e}")))
    }

    /// Sends `blob` to ranks `1..world` as they connect; returns once all have it, or errors
    /// after `timeout` naming the ranks that never came.
    pub fn serve(self, blob: &[u8], timeout: Duration) -> Result<()> {
        if blob.len() > MAX_PAYLOAD {
            return rdzv_err(
                &self.addr,
                format!("blob of {} bytes too large", blob.len()),
            );
        }
        let start = Instant::now();
        let deadline = start + timeout;
        let mut served = vec![false; self.world];
        served[0] = true;
        let mut remaining = self.world - 1;
        let mut last_issue = String::new();
        while remaining > 0 {
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<String> = served
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !**s)
                    .map(|(r, _)| r.to_string())
                    .collect();
                return Err(DistError::RendezvousTimeout {
                    addr: self.addr.clone(),
                    waited: start.elapsed(),
                    reason: format!(
                        "rank 0 never heard from rank(s) {}{}",
                        missing.join(", "),
                        if last_issue.is_empty() {
                            String::new()
                        } else {
                            format!(" (last problem: {last_issue})")
                        }
                    ),
                });
            }
            let (stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    std::thread::sleep(Duration::from_millis(2).min(deadline - now));
                    continue;
                }
                Err(e) => return rdzv_err(&self.addr, format!("accept: {e}")),
            };
            match self.handshake(stream, blob, deadline, &mut served) {
                Ok(()) => remaining -= 1,
                // a peer with the wrong world size or a duplicate rank: the job is misconfigured
                Err(Fatal(reason)) => return rdzv_err(&self.addr, reason),
                // a stray or broken connection: note it and keep waiting for the real ranks
                Err(Transient(reason)) => last_issue = format!("{peer}: {reason}"),
            }
        }
        Ok(())
    }

    fn handshake(
        &self,
        mut s: TcpStream,
        blob: &[u8],
        deadline: Instant,
        served: &mut [bool],
    ) -> std::result::Result<(), HandshakeError> {
        let io = |e: std::io::Error| Transient(e.to_string());
        // real clients speak first and at once; a silent stray connection must not hold
        // rank 0 for the whole timeout
        let left = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        s.set_nonblocking(false).map_err(io)?;
        s.set_read_timeout(Some(left)).map_err(io)?;
        s.set_write_timeout(Some(left)).map_err(io)?;
        let mut hello = [0u8; 16];
        s.read_exact(&mut hello).map_err(io)?;
        if &hello[..8] != MAGIC {
            return Err(Transient("not a yolo-forge rendezvous client".into()));
        }
        let rank = u32::from_le_bytes([hello[8], hello[9], hello[10], hello[11]]) as usize;
        let world = u32::from_le_bytes([hello[12], hello[13], hello[14], hello[15]]) as usize;
        let problem = if world != self.world {
            Some(format!(
                "rank {rank} says WORLD_SIZE={world}, rank 0 has WORLD_SIZE={}",
                self.world
            ))
        } else if rank == 0 || rank >= self.world {
            Some(format!(
                "a client claims rank {rank}, expected 1..{}",
                self.world
            ))
        } else if served[rank] {
            Some(format!("rank {rank} connected twice (duplicate RANK?)"))
        } else {
            None
        };
        let (status, payload) = match &problem {
            Some(p) => (1u8, p.as_bytes()),
            None => (0u8, blob),
        };
        let mut msg = Vec::with_capacity(5 + payload.len());
        msg.push(status);
        msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        msg.extend_from_slice(payload);
        let sent = s.write_all(&msg).and_then(|_| s.flush());
        if let Some(p) = problem {
            return Err(Fatal(p));
        }
        sent.map_err(io)?;
        served[rank] = true;
        Ok(())
    }
}

enum HandshakeError {
    Fatal(String),
    Transient(String),
}
use HandshakeError::{Fatal, Transient};

/// A non-zero rank's side: connects to rank 0 at `addr` (retrying until `timeout`) and returns
/// the blob rank 0 serves.
pub fn fetch_blob(addr: &str, rank: usize, world: usize, timeout: Duration) -> Result<Vec<u8>> {
    if rank == 0 || rank >= world || world > u32::MAX as usize {
        return rdzv_err(
            addr,
            format!("fetch_blob is for ranks 1..{world}, not rank {rank}"),
        );
    }
    let start = Instant::now();
    let deadline = start + timeout;
    let mut backoff = Duration::from_millis(5);
    let mut last_err = String::from("no attempt made");
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(DistError::RendezvousTimeout {
                addr: addr.to_string(),
                waited: start.elapsed(),
                reason: format!(
                    "rank {rank} could not reach rank 0 (is rank 0 running, and MASTER_ADDR/MASTER_PORT the same on every rank?); last error: {last_err}"
                ),
            });
        }
        match try_fetch(addr, rank, world, deadline) {
            Ok(Ok(blob)) => return Ok(blob),
            // rank 0 answered and refused us: retrying cannot help
            Ok(Err(refusal)) => {
                return rdzv_err(addr, format!("rank 0 refused rank {rank}: {refusal}"))
            }
            Err(e) => last_err = e.to_string(),
        }
        let now = Instant::now();
        std::thread::sleep(backoff.min(deadline.saturating_duration_since(now)));
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
}

/// One connection attempt: `Err` for I/O problems (retry), `Ok(Err)` when rank 0 refused.
fn try_fetch(
    addr: &str,
    rank: usize,
    world: usize,
    deadline: Instant,
) -> std::io::Result<std::result::Result<Vec<u8>, String>> {
    let addrs = resolve(addr)?;
    let mut last = std::io::Error::new(ErrorKind::NotFound, format!("{addr} resolves to nothing"));
    for sa in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&sa, left) {
            Ok(mut s) => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(50));
                s.set_read_timeout(Some(left))?;
                s.set_write_timeout(Some(left))?;
                let mut hello = Vec::with_capacity(16);
                hello.extend_from_slice(MAGIC);
                hello.extend_from_slice(&(rank as u32).to_le_bytes());
                hello.extend_from_slice(&(world as u32).to_le_bytes());
                s.write_all(&hello)?;
                let mut head = [0u8; 5];
                s.read_exact(&mut head)?;
                let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
                if len > MAX_PAYLOAD || head[0] > 1 {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        "the answer is not from a yolo-forge rendezvous server",
                    ));
                }
                let mut payload = vec![0u8; len];
                s.read_exact(&mut payload)?;
                return Ok(if head[0] == 0 {
                    Ok(payload)
                } else {
                    Err(String::from_utf8_lossy(&payload).into_owned())
                });
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Shares a blob made by rank 0 with every rank of `env`: rank 0 binds first, then calls
/// `make_blob` (e.g. creates the NCCL unique id) and serves it; other ranks fetch it. Every
/// rank returns rank 0's blob. A single process just returns `make_blob()`.
pub fn share_from_rank0(
    env: &DistEnv,
    make_blob: impl FnOnce() -> Result<Vec<u8>>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    if !env.is_distributed() {
        return make_blob();
    }
    let addr = env.rendezvous_addr();
    if env.rank == 0 {
        let server = RendezvousServer::bind(&addr, env.world_size)?;
        let blob = make_blob()?;
        server.serve(&blob, timeout)?;
        Ok(blob)
    } else {
        fetch_blob(&addr, env.rank, env.world_size, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn id_blob() -> Vec<u8> {
        (0..NCCL_UNIQUE_ID_BYTES)
            .map(|i| (i * 7 + 3) as u8)
            .collect()
    }

    #[test]
    fn every_rank_gets_rank0s_bytes() {
        let server = RendezvousServer::bind("127.0.0.1:0", 3).unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let clients: Vec<_> = (1..3)
            .map(|rank| {
                let addr = addr.clone();
                thread::spawn(move || fetch_blob(&addr, rank, 3, Duration::from_secs(10)))
            })
            .collect();
        server.serve(&id_blob(), Duration::from_secs(10)).unwrap();
        for c in clients {
            assert_eq!(c.join().unwrap().unwrap(), id_blob());
        }
    }

    #[test]
    fn clients_started_before_rank0_retry_until_it_listens() {
        // pick a free port, release it, start the clients, then start rank 0
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = |rank| DistEnv {
            rank,
            world_size: 3,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            rendezvous_port: port,
        };
        let clients: Vec<_> = (1..3)
            .map(|rank| {
                let e = env(rank);
                thread::spawn(move || {
                    share_from_rank0(
                        &e,
                        || panic!("only rank 0 makes the id"),
                        Duration::from_secs(10),
                    )
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(30));
        let got0 = share_from_rank0(&env(0), || Ok(id_blob()), Duration::from_secs(10)).unwrap();
        assert_eq!(got0, id_blob());
        for c in clients {
            assert_eq!(c.join().unwrap().unwrap(), id_blob());
        }
    }

    #[test]
    fn a_missing_rank0_times_out_clearly() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let t = Instant::now();
        let e = fetch_blob(&addr, 1, 2, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let msg = e.to_string();
        assert!(matches!(e, DistError::RendezvousTimeout { .. }), "{msg}");
        assert!(
            msg.contains(&addr)
                && msg.contains("timed out")
                && msg.contains("rank 1 could not reach rank 0"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_rank_is_named_by_rank0() {
        let server = RendezvousServer::bind("127.0.0.1:0", 3).unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let c = thread::spawn(move || fetch_blob(&addr, 2, 3, Duration::from_secs(10)));
        let e = server
            .serve(&id_blob(), Duration::from_millis(300))
            .unwrap_err();
        assert!(e.to_string().contains("never heard from rank(s) 1"), "{e}");
        assert_eq!(c.join().unwrap().unwrap(), id_blob());
    }

    #[test]
    fn a_wrong_world_size_is_refused_on_both_sides() {
        let server = RendezvousServer::bind("127.0.0.1:0", 2).unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let c = thread::spawn(move || fetch_blob(&addr, 1, 4, Duration::from_secs(10)));
        let e = server
            .serve(&id_blob(), Duration::from_secs(10))
            .unwrap_err();
        assert!(e.to_string().contains("WORLD_SIZE=4"), "{e}");
        let e = c.join().unwrap().unwrap_err();
        assert!(
            e.to_string().contains("refused rank 1") && e.to_string().contains("WORLD_SIZE=4"),
            "{e}"
        );
    }

    #[test]
    fn stray_connections_do_not_break_the_rendezvous() {
        let server = RendezvousServer::bind("127.0.0.1:0", 2).unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let a = addr.clone();
        let c = thread::spawn(move || {
            let mut s = TcpStream::connect(&a).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            drop(s);
            fetch_blob(&a, 1, 2, Duration::from_secs(10))
        });
        server.serve(&id_blob(), Duration::from_secs(10)).unwrap();
        assert_eq!(c.join().unwrap().unwrap(), id_blob());
    }

    #[test]
    fn single_process_needs_no_network() {
        let got =
            share_from_rank0(&DistEnv::single(), || Ok(vec![1, 2, 3]), Duration::ZERO).unwrap();
        assert_eq!(got, vec![1, 2, 3]);
    }
}
