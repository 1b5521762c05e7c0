//! A CPU communicator over TCP with rank 0 as the hub: for `torchrun … --device cpu` runs.
//!
//! Rank 0 opens a data port, shares its number through the [`rendezvous`](crate::rendezvous)
//! (which already checks world sizes and duplicate ranks), and keeps one connection per other
//! rank. In a collective every other rank sends a header (kind, root, length) and its data to
//! rank 0, which checks that all agree, sums in rank order (rank 0 + rank 1 + …, as
//! [`LocalComm`](crate::LocalComm)) and sends the result back, so every rank gets the same
//! bits. Traffic is O(world × size) through rank 0: fine for a few CPU processes.

use crate::comm::Communicator;
use crate::env::DistEnv;
use crate::error::{arg_err, DistError, Result};
use crate::rendezvous::share_from_rank0;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"YFTCPC01";
const OP_ALL_REDUCE: u8 = 0;
const OP_BROADCAST: u8 = 1;
const OP_BARRIER: u8 = 2;
/// Largest collective accepted (floats), so a corrupt header cannot make us allocate much.
const MAX_FLOATS: u64 = 1 << 31;

enum Links {
    /// Rank 0: the streams of ranks 1..world, by rank - 1.
    Hub(Vec<TcpStream>),
    /// Other ranks: the stream to rank 0.
    Spoke(TcpStream),
}

/// One rank of a TCP group (see the module docs).
pub struct TcpComm {
    rank: usize,
    world: usize,
    links: Mutex<Links>,
}

impl std::fmt::Debug for TcpComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TcpComm {{ rank: {}, world: {} }}",
            self.rank, self.world
        )
    }
}

fn io_err(op: &'static str, peer: usize) -> impl Fn(std::io::Error) -> DistError {
    move |e| match e.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => DistError::PeerGone { op, rank: peer },
        _ => DistError::Mismatch {
            op,
            detail: format!("connection to rank {peer}: {e}"),
        },
    }
}

fn rdzv_err(addr: &str, reason: String) -> DistError {
    DistError::Rendezvous {
        addr: addr.to_string(),
        reason,
    }
}

fn op_name(op: u8) -> &'static str {
    match op {
        OP_ALL_REDUCE => "all_reduce_sum",
        OP_BROADCAST => "broadcast",
        _ => "barrier",
    }
}

fn header(op: u8, root: usize, len: usize) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[0] = op;
    h[1..5].copy_from_slice(&(root as u32).to_le_bytes());
    h[5..13].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

fn parse_header(h: &[u8; 13]) -> (u8, usize, u64) {
    let root = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
    let mut l = [0u8; 8];
    l.copy_from_slice(&h[5..13]);
    (h[0], root, u64::from_le_bytes(l))
}

fn send_floats(s: &mut TcpStream, v: &[f32]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    s.write_all(&bytes)
}

fn recv_floats(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<f32>> {
    let mut bytes = vec![0u8; n * 4];
    s.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Status byte then, on error, a u32-length-prefixed message.
fn send_status(s: &mut TcpStream, err: Option<&str>) -> std::io::Result<()> {
    match err {
        None => s.write_all(&[0]),
        Some(m) => {
            let mut msg = vec![1u8];
            msg.extend_from_slice(&(m.len() as u32).to_le_bytes());
            msg.extend_from_slice(m.as_bytes());
            s.write_all(&msg)
        }
    }
}

impl TcpComm {
    /// Joins the job `env` describes: rank 0 opens a data port on MASTER_ADDR and shares it
    /// through the rendezvous; every rank waits up to `timeout` for the group to form. A
    /// single process gets a group of one that never touches the network.
    pub fn from_env(env: &DistEnv, timeout: Duration) -> Result<TcpComm> {
        let (rank, world) = (env.rank, env.world_size);
        if world == 0 || rank >= world {
            return arg_err(
                "TcpComm::from_env",
                format!("rank {rank} of world size {world}"),
            );
        }
        if world == 1 {
            return Ok(TcpComm {
                rank,
                world,
                links: Mutex::new(Links::Hub(Vec::new())),
            });
        }
        let bind_addr = format!("{}:0", env.master_addr);
        let mut listener = None;
        let blob = share_from_rank0(
            env,
            || {
                let l = TcpListener::bind(&bind_addr).map_err(|e| {
                    rdzv_err(&bind_addr, format!("rank 0 cannot open a data port: {e}"))
                })?;
                let port = l
                    .local_addr()
                    .map_err(|e| rdzv_err(&bind_addr, format!("local_addr: {e}")))?
                    .port();
                listener = Some(l);
                Ok(port.to_le_bytes().to_vec())
            },
            timeout,
        )?;
        let port = match blob.as_slice() {
            [a, b] => u16::from_le_bytes([*a, *b]),
            _ => {
                return Err(rdzv_err(
                    &env.rendezvous_addr(),
                    format!("rank 0 sent {} bytes, not a port number", blob.len()),
                ))
            }
        };
        let links = match listener {
            Some(l) => Links::Hub(accept_ranks(&l, world, timeout, &bind_addr)?),
            None => Links::Spoke(connect_hub(
                &format!("{}:{port}", env.master_addr),
                rank,
                world,
                timeout,
            )?),
        };
        Ok(TcpComm {
            rank,
            world,
            links: Mutex::new(links),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Links> {
        // a panic mid-collective leaves the streams out of step; the next read reports it
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one collective: `data` is what this rank contributes (its buffer for a sum, the
    /// root's buffer for a broadcast, nothing otherwise); returns the result to copy back.
    fn collective(&self, op: u8, root: usize, buf: &[f32]) -> Result<Vec<f32>> {
        let name = op_name(op);
        let mut links = self.lock();
        match &mut *links {
            Links::Hub(peers) => hub_round(peers, op, root, buf),
            Links::Spoke(s) => {
                let e = io_err(name, 0);
                s.write_all(&header(op, root, buf.len())).map_err(&e)?;
                let sends = op == OP_ALL_REDUCE || (op == OP_BROADCAST && root == self.rank);
                if sends {
                    send_floats(s, buf).map_err(&e)?;
                }
                s.flush().map_err(&e)?;
                let mut status = [0u8; 1];
                s.read_exact(&mut status).map_err(&e)?;
                if status[0] != 0 {
                    let mut len = [0u8; 4];
                    s.read_exact(&mut len).map_err(&e)?;
                    let n = (u32::from_le_bytes(len) as usize).min(1 << 16);
                    let mut msg = vec![0u8; n];
                    s.read_exact(&mut msg).map_err(&e)?;
                    return Err(DistError::Mismatch {
                        op: name,
                        detail: String::from_utf8_lossy(&msg).into_owned(),
                    });
                }
                if op == OP_BARRIER {
                    return Ok(Vec::new());
                }
                recv_floats(s, buf.len()).map_err(&e)
            }
        }
    }
}

/// Rank 0's side of one collective.
fn hub_round(peers: &mut [TcpStream], op: u8, root: usize, buf: &[f32]) -> Result<Vec<f32>> {
    let name = op_name(op);
    let mut acc = buf.to_vec();
    let mut problem: Option<String> = None;
    for (k, s) in peers.iter_mut().enumerate() {
        let r = k + 1;
        let e = io_err(name, r);
        let mut h = [0u8; 13];
        s.read_exact(&mut h).map_err(&e)?;
        let (pop, proot, plen) = parse_header(&h);
        if pop > OP_BARRIER || plen > MAX_FLOATS {
            return Err(DistError::Mismatch {
                op: name,
                detail: format!("rank {r} sent a malformed header"),
            });
        }
        let same = pop == op && (op != OP_BROADCAST || proot == root) && plen as usize == buf.len();
        if !same && problem.is_none() {
            problem = Some(format!(
                "rank 0 called {name} (root {root}, {} floats), rank {r} called {} (root {proot}, {plen} floats)",
                buf.len(),
                op_name(pop)
            ));
        }
        // read what the peer sent even on a mismatch, so the stream stays in step
        let sends = pop == OP_ALL_REDUCE || (pop == OP_BROADCAST && proot == r);
        if sends {
            let v = recv_floats(s, plen as usize).map_err(&e)?;
            if same {
                if op == OP_ALL_REDUCE {
                    for (a, x) in acc.iter_mut().zip(&v) {
                        *a += *x;
                    }
                } else {
                    acc = v;
                }
            }
        }
    }
    for (k, s) in peers.iter_mut().enumerate() {
        let e = io_err(name, k + 1);
        send_status(s, problem.as_deref()).map_err(&e)?;
        if problem.is_none() && op != OP_BARRIER {
            send_floats(s, &acc).map_err(&e)?;
        }
        s.flush().map_err(&e)?;
    }
    match problem {
        Some(detail) => Err(DistError::Mismatch { op: name, detail }),
        None if op == OP_BARRIER => Ok(Vec::new()),
        None => Ok(acc),
    }
}

/// Rank 0 accepts one connection per other rank (stray connections are dropped).
fn accept_ranks(
    l: &TcpListener,
    world: usize,
    timeout: Duration,
    addr: &str,
) -> Result<Vec<TcpStream>> {
    l.set_nonblocking(true)
        .map_err(|e| rdzv_err(addr, format!("set_nonblocking: {e}")))?;
    let deadline = Instant::now() + timeout;
    let mut peers: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
    while peers.iter().any(Option::is_none) {
        if Instant::now() >= deadline {
            let missing: Vec<String> = peers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_none())
                .map(|(k, _)| (k + 1).to_string())
                .collect();
            return Err(DistError::RendezvousTimeout {
                addr: addr.to_string(),
                waited: timeout,
                reason: format!(
                    "rank(s) {} never opened the data connection",
                    missing.join(", ")
                ),
            });
        }
        let mut s = match l.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => return Err(rdzv_err(addr, format!("accept: {e}"))),
        };
        let hello = (|| -> std::io::Result<[u8; 16]> {
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut h = [0u8; 16];
            s.read_exact(&mut h)?;
            // collectives may wait for as long as rank 0 validates: no timeout from here on
            s.set_read_timeout(None)?;
            s.set_nodelay(true)?;
            Ok(h)
        })();
        let Ok(h) = hello else { continue };
        if &h[..8] != MAGIC {
            continue;
        }
        let rank = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let w = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
        if w != world || rank == 0 || rank >= world || peers[rank - 1].is_some() {
            return Err(rdzv_err(
                addr,
                format!("data connection from rank {rank} of world {w} in a world of {world}"),
            ));
        }
        peers[rank - 1] = Some(s);
    }
    Ok(peers.into_iter().flatten().collect())
}

/// A non-zero rank connects to rank 0's data port (retrying until `timeout`).
fn connect_hub(addr: &str, rank: usize, world: usize, timeout: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt made");
    while Instant::now() < deadline {
        let attempt = (|| -> std::io::Result<TcpStream> {
            let sa = addr
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "resolves to nothing"))?;
            let left = deadline.saturating_duration_since(Instant::now());
            let mut s = TcpStream::connect_timeout(&sa, left.max(Duration::from_millis(10)))?;
            s.set_nodelay(true)?;
            let mut hello = Vec::with_capacity(16);
            hello.extend_from_slice(MAGIC);
            hello.extend_from_slice(&(rank as u32).to_le_bytes());
            hello.extend_from_slice(&(world as u32).to_le_bytes());
            s.write_all(&hello)?;
            Ok(s)
        })();
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(DistError::RendezvousTimeout {
        addr: addr.to_string(),
        waited: timeout,
        reason: format!("rank {rank} could not open the data connection to rank 0: {last}"),
    })
}

impl Communicator for TcpComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let out = self.collective(OP_ALL_REDUCE, 0, buf)?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.world {
            return arg_err(
                "broadcast",
                format!("root {root} out of range for world size {}", self.world),
            );
        }
        if self.world == 1 {
            return Ok(());
        }
        let out = self.collective(OP_BROADCAST, root, buf)?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        self.collective(OP_BARRIER, 0, &[]).map(|_| ())
    }
}
