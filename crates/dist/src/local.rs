//! An in-process communicator: every rank is a thread, collectives meet in shared memory.
//!
//! Same contract as NCCL (all ranks call the same collectives in the same order with equal
//! lengths), but checked: a mismatch is an error on every rank instead of a hang, and a rank
//! that drops its communicator (or panics) wakes the others with an error.

use crate::comm::Communicator;
use crate::error::{arg_err, DistError, Result};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AllReduceSum,
    Broadcast(usize),
    Barrier,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AllReduceSum => "all_reduce_sum",
            Kind::Broadcast(_) => "broadcast",
            Kind::Barrier => "barrier",
        }
    }
}

/// Outcome of one collective round, shared by all ranks.
type RoundResult = Arc<std::result::Result<Vec<f32>, String>>;

struct State {
    /// Completed rounds; a rank waits for this to move past the round it joined.
    generation: u64,
    /// Contributions to the current round, by rank.
    slots: Vec<Option<(Kind, Vec<f32>)>>,
    arrived: usize,
    /// Result of the last completed round.
    result: Option<RoundResult>,
    /// The first rank that left the group, if any.
    gone: Option<usize>,
}

struct Shared {
    world: usize,
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // a rank that panicked while holding the lock left consistent state behind (every
        // update is completed before anything that can panic), so the poison is ignored
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Builds the ranks of an in-process group.
#[derive(Debug, Clone, Copy)]
pub struct LocalGroup;

impl LocalGroup {
    /// Runs `f(comm)` on one thread per rank and returns the results in rank order (a rank
    /// that panics is reported as an error, after the others have finished).
    pub fn run<T: Send + 'static>(
        world: usize,
        f: impl Fn(LocalComm) -> T + Send + Sync + 'static,
    ) -> Result<Vec<T>> {
        let f = Arc::new(f);
        let handles: Vec<_> = LocalGroup::new(world)?
            .into_iter()
            .map(|c| {
                let f = f.clone();
                std::thread::spawn(move || f(c))
            })
            .collect();
        let mut out = Vec::with_capacity(world);
        let mut panicked = None;
        for (rank, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(v) => out.push(v),
                Err(_) => {
                    panicked.get_or_insert(rank);
                }
            }
        }
        match panicked {
            Some(rank) => arg_err("LocalGroup::run", format!("rank {rank} panicked")),
            None => Ok(out),
        }
    }

    /// One communicator per rank, `0..world` (give each to its own thread). Errors on `world == 0`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(world: usize) -> Result<Vec<LocalComm>> {
        if world == 0 {
            return arg_err("LocalGroup::new", "world size must be at least 1");
        }
        let shared = Arc::new(Shared {
            world,
            state: Mutex::new(State {
                generation: 0,
                slots: vec![None; world],
                arrived: 0,
                result: None,
                gone: None,
            }),
            cv: Condvar::new(),
        });
        Ok((0..world)
            .map(|rank| LocalComm {
                rank,
                shared: shared.clone(),
            })
            .collect())
    }
}

/// One rank of a [`LocalGroup`]: sums run in rank order (rank 0 + rank 1 + …), so every rank
/// gets bit-identical results, as with NCCL.
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalComm {{ rank: {}, world: {} }}",
            self.rank, self.shared.world
        )
    }
}

impl Drop for LocalComm {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.gone.get_or_insert(self.rank);
        drop(st);
        self.shared.cv.notify_all();
    }
}

/// Combines the contributions of one round (all slots filled).
fn reduce_round(slots: &[Option<(Kind, Vec<f32>)>]) -> std::result::Result<Vec<f32>, String> {
    let contributions: Vec<&(Kind, Vec<f32>)> = slots.iter().flatten().collect();
    let (kind0, buf0) = contributions[0];
    for (r, (k, b)) in contributions.iter().enumerate().skip(1) {
        if k != kind0 {
            return Err(format!(
                "rank 0 called {:?}, rank {r} called {:?}",
                kind0, k
            ));
        }
        if b.len() != buf0.len() {
            return Err(format!(
                "buffer length {} on rank 0, {} on rank {r}",
                buf0.len(),
                b.len()
            ));
        }
    }
    Ok(match kind0 {
        Kind::AllReduceSum => {
            let mut acc = buf0.clone();
            for (_, b) in &contributions[1..] {
                for (a, x) in acc.iter_mut().zip(b) {
                    *a += *x;
                }
            }
            acc
        }
        Kind::Broadcast(root) => contributions[*root].1.clone(),
        Kind::Barrier => Vec::new(),
    })
}

impl LocalComm {
    /// Joins one collective round with `buf` and returns the round's result.
    fn collective(&self, kind: Kind, buf: &[f32]) -> Result<Vec<f32>> {
        let op = kind.name();
        let sh = &*self.shared;
        let mut st = sh.lock();
        if let Some(rank) = st.gone {
            return Err(DistError::PeerGone { op, rank });
        }
        let my_gen = st.generation;
        st.slots[self.rank] = Some((kind, buf.to_vec()));
        st.arrived += 1;
        if st.arrived == sh.world {
            let result = reduce_round(&st.slots);
            st.slots.iter_mut().for_each(|s| *s = None);
            st.arrived = 0;
            st.result = Some(Arc::new(result));
            st.generation += 1;
            sh.cv.notify_all();
        } else {
            while st.generation == my_gen {
                if let Some(rank) = st.gone {
                    return Err(DistError::PeerGone { op, rank });
                }
                st = sh.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
        // the next round cannot complete before this rank joins it, so `result` is still ours
        let result = st.result.clone();
        drop(st);
        match result.as_deref() {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(detail)) => Err(DistError::Mismatch {
                op,
                detail: detail.clone(),
            }),
            None => Err(DistError::Mismatch {
                op,
                detail: "no result recorded".into(),
            }),
        }
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let out = self.collective(Kind::AllReduceSum, buf)?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.shared.world {
            return arg_err(
                "broadcast",
                format!(
                    "root {root} out of range for world size {}",
                    self.shared.world
                ),
            );
        }
        let out = self.collective(Kind::Broadcast(root), buf)?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.collective(Kind::Barrier, &[]).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f(comm)` on one thread per rank and returns the results by rank.
    fn run<T: Send + 'static>(
        world: usize,
        f: impl Fn(LocalComm) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        LocalGroup::run(world, f).unwrap()
    }

    #[test]
    fn all_reduce_sums_in_rank_order_and_agrees_everywhere() {
        for world in [1, 2, 3, 5] {
            let out = run(world, |c| {
                let r = c.rank() as f32;
                // values whose float sum depends on the order: 1e8 + r·0.3 …
                let mut buf = vec![1e8 * (1.0 - 2.0 * (r % 2.0)), r * 0.3 + 0.1, r];
                c.all_reduce_sum(&mut buf).unwrap();
                buf
            });
            let mut want = vec![0.0f32; 3];
            for r in 0..world {
                let r = r as f32;
                let v = [1e8 * (1.0 - 2.0 * (r % 2.0)), r * 0.3 + 0.1, r];
                for (w, x) in want.iter_mut().zip(v) {
                    *w += x;
                }
            }
            for b in &out {
                assert_eq!(b, &want, "world {world}");
            }
        }
    }

    #[test]
    fn broadcast_copies_root_and_rounds_stay_in_step() {
        let out = run(3, |c| {
            let mut seen = Vec::new();
            for round in 0..50 {
                let root = round % 3;
                let mut buf = vec![(c.rank() * 100 + round) as f32; 4];
                c.broadcast(&mut buf, root).unwrap();
                seen.push(buf[0]);
                if round % 7 == 0 {
                    c.barrier().unwrap();
                }
            }
            seen
        });
        let want: Vec<f32> = (0..50).map(|r| ((r % 3) * 100 + r) as f32).collect();
        for s in out {
            assert_eq!(s, want);
        }
    }

    #[test]
    fn mismatched_lengths_error_on_every_rank() {
        let out = run(2, |c| {
            let mut buf = vec![1.0; 2 + c.rank()];
            c.all_reduce_sum(&mut buf)
        });
        for r in out {
            let e = r.unwrap_err();
            assert!(matches!(e, DistError::Mismatch { .. }), "{e}");
            assert!(
                e.to_string()
                    .contains("buffer length 2 on rank 0, 3 on rank 1"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_rank_that_leaves_wakes_the_others() {
        let out = run(3, |c| {
            if c.rank() == 2 {
                drop(c);
                return Ok(());
            }
            c.barrier()
        });
        for r in &out[..2] {
            assert!(
                matches!(r, Err(DistError::PeerGone { rank: 2, .. })),
                "{r:?}"
            );
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(LocalGroup::new(0).is_err());
        let g = LocalGroup::new(1).unwrap();
        let mut b = [1.0];
        assert!(g[0].broadcast(&mut b, 1).is_err());
        g[0].broadcast(&mut b, 0).unwrap();
        assert_eq!(b, [1.0]);
    }

    #[test]
    fn single_process_is_a_no_op_group_of_one() {
        let s = crate::SingleProcess;
        assert_eq!((s.rank(), s.world_size()), (0, 1));
        let mut b = [2.0];
        s.all_reduce_sum(&mut b).unwrap();
        s.broadcast(&mut b, 0).unwrap();
        s.barrier().unwrap();
        assert_eq!(b, [2.0]);
        assert!(s.broadcast(&mut b, 1).is_err());
    }
}
