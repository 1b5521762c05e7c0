//! The torchrun environment contract: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.

use crate::error::{DistError, Result};
use std::collections::HashMap;

/// MASTER_ADDR when none is given (single process).
pub const DEFAULT_MASTER_ADDR: &str = "127.0.0.1";
/// MASTER_PORT when none is given (single process), as torchrun's default.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// The variables read, in the order they are checked.
const VARS: [&str; 7] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_USE_AGENT_STORE",
    "YOLO_RDZV_PORT",
];

/// Where this process sits in a data-parallel job, as torchrun describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes in the job.
    pub world_size: usize,
    /// Rank on this node: the CUDA device ordinal this process uses.
    pub local_rank: usize,
    /// Host of rank 0.
    pub master_addr: String,
    /// MASTER_PORT.
    pub master_port: u16,
    /// The port rank 0 listens on to share the NCCL unique id.
    ///
    /// MASTER_PORT, unless torchrun's agent already holds it (TORCHELASTIC_USE_AGENT_STORE=True:
    /// then MASTER_PORT + 1), or YOLO_RDZV_PORT when set.
    pub rendezvous_port: u16,
}

impl Default for DistEnv {
    fn default() -> Self {
        DistEnv::single()
    }
}

fn env_err<T>(var: &'static str, value: &str, reason: impl Into<String>) -> Result<T> {
    Err(DistError::Env {
        var,
        value: value.to_string(),
        reason: reason.into(),
    })
}

fn parse_usize(var: &'static str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse::<usize>()
        .or_else(|_| env_err(var, value, "not a non-negative integer"))
}

fn parse_port(var: &'static str, value: &str) -> Result<u16> {
    match value.trim().parse::<u16>() {
        Ok(0) => env_err(var, value, "port 0 is not a usable rendezvous port"),
        Ok(p) => Ok(p),
        Err(_) => env_err(var, value, "not a TCP port (1..=65535)"),
    }
}

impl DistEnv {
    /// A plain, non-distributed process: rank 0 of 1.
    pub fn single() -> DistEnv {
        DistEnv {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: DEFAULT_MASTER_ADDR.to_string(),
            master_port: DEFAULT_MASTER_PORT,
            rendezvous_port: DEFAULT_MASTER_PORT,
        }
    }

    /// Reads the torchrun variables of this process (see [`DistEnv::from_vars`]).
    pub fn from_env() -> Result<DistEnv> {
        let mut vars = HashMap::new();
        for var in VARS {
            match std::env::var(var) {
                Ok(v) => {
                    vars.insert(var.to_string(), v);
                }
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(v)) => {
                    return env_err(var, &v.to_string_lossy(), "not valid UTF-8")
                }
            }
        }
        DistEnv::from_vars(&vars)
    }

    /// Builds the environment from variables: none of RANK, WORLD_SIZE, LOCAL_RANK set means a
    /// single process; otherwise WORLD_SIZE ≥ 1, RANK < WORLD_SIZE (both required when
    /// WORLD_SIZE > 1), LOCAL_RANK < WORLD_SIZE (defaults to RANK), and MASTER_ADDR and
    /// MASTER_PORT are required when WORLD_SIZE > 1. Errors name the variable and its value.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<DistEnv> {
        let get = |k: &str| vars.get(k).map(String::as_str);
        let mut env = DistEnv::single();
        if let Some(v) = get("MASTER_ADDR") {
            if v.trim().is_empty() {
                return env_err("MASTER_ADDR", v, "empty host name");
            }
            env.master_addr = v.trim().to_string();
        }
        if let Some(v) = get("MASTER_PORT") {
            env.master_port = parse_port("MASTER_PORT", v)?;
        }
        env.rendezvous_port = env.master_port;
        if let Some(v) = get("TORCHELASTIC_USE_AGENT_STORE") {
            if v.trim().eq_ignore_ascii_case("true") {
                // the torchrun agent's TCP store already listens on MASTER_PORT
                env.rendezvous_port = env.master_port.checked_add(1).map_or_else(
                    || {
                        env_err(
                            "MASTER_PORT",
                            &env.master_port.to_string(),
                            "no port above it for the NCCL id rendezvous; set YOLO_RDZV_PORT",
                        )
                    },
                    Ok,
                )?;
            }
        }
        if let Some(v) = get("YOLO_RDZV_PORT") {
            env.rendezvous_port = parse_port("YOLO_RDZV_PORT", v)?;
        }

        let rank = get("RANK").map(|v| parse_usize("RANK", v)).transpose()?;
        let world = get("WORLD_SIZE")
            .map(|v| parse_usize("WORLD_SIZE", v))
            .transpose()?;
        let local = get("LOCAL_RANK")
            .map(|v| parse_usize("LOCAL_RANK", v))
            .transpose()?;
        let world = match (world, rank, local) {
            (None, None, None) => return Ok(env),
            (Some(0), ..) => {
                return env_err("WORLD_SIZE", get("WORLD_SIZE").unwrap_or(""), "must be ≥ 1")
            }
            (Some(w), ..) => w,
            (None, Some(_), _) => {
                return env_err(
                    "WORLD_SIZE",
                    "",
                    format!(
                        "not set, but RANK={} is: set both (torchrun sets all of RANK, WORLD_SIZE, LOCAL_RANK)",
                        get("RANK").unwrap_or("")
                    ),
                )
            }
            (None, None, Some(_)) => {
                return env_err(
                    "WORLD_SIZE",
                    "",
                    format!(
                        "not set, but LOCAL_RANK={} is",
                        get("LOCAL_RANK").unwrap_or("")
                    ),
                )
            }
        };
        let rank = match rank {
            Some(r) => r,
            None if world == 1 => 0,
            None => {
                return env_err(
                    "RANK",
                    "",
                    format!("not set, but WORLD_SIZE={world}: every process needs its rank"),
                )
            }
        };
        if rank >= world {
            return env_err(
                "RANK",
                get("RANK").unwrap_or(""),
                format!("must be less than WORLD_SIZE={world}"),
            );
        }
        let local_rank = local.unwrap_or(rank);
        if local_rank >= world {
            return env_err(
                "LOCAL_RANK",
                get("LOCAL_RANK").unwrap_or(""),
                format!("must be less than WORLD_SIZE={world}"),
            );
        }
        if world > 1 {
            for var in ["MASTER_ADDR", "MASTER_PORT"] {
                if get(var).is_none() {
                    return env_err(
                        var,
                        "",
                        format!("not set, but WORLD_SIZE={world}: rank 0's address is needed"),
                    );
                }
            }
        }
        env.rank = rank;
        env.world_size = world;
        env.local_rank = local_rank;
        Ok(env)
    }

    /// Whether more than one process takes part.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// `MASTER_ADDR:rendezvous_port`, where rank 0 shares the NCCL unique id.
    pub fn rendezvous_addr(&self) -> String {
        if self.master_addr.contains(':') && !self.master_addr.starts_with('[') {
            format!("[{}]:{}", self.master_addr, self.rendezvous_port)
        } else {
            format!("{}:{}", self.master_addr, self.rendezvous_port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(kv: &[(&str, &str)]) -> String {
        DistEnv::from_vars(&vars(kv)).unwrap_err().to_string()
    }

    #[test]
    fn absent_means_single_process() {
        let e = DistEnv::from_vars(&HashMap::new()).unwrap();
        assert_eq!(e, DistEnv::single());
        assert!(!e.is_distributed());
        assert_eq!(e.rendezvous_addr(), "127.0.0.1:29500");
    }

    #[test]
    fn torchrun_variables_parse() {
        let e = DistEnv::from_vars(&vars(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29400"),
        ]))
        .unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.local_rank, e.master_port),
            (5, 8, 1, 29400)
        );
        assert!(e.is_distributed());
        assert_eq!(e.rendezvous_addr(), "node0:29400");
        // torchrun's agent store holds MASTER_PORT: the id goes over the next port
        let mut v = vars(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "::1"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        let e = DistEnv::from_vars(&v).unwrap();
        assert_eq!(e.local_rank, 0);
        assert_eq!(e.rendezvous_addr(), "[::1]:29401");
        v.insert("YOLO_RDZV_PORT".into(), "31000".into());
        assert_eq!(DistEnv::from_vars(&v).unwrap().rendezvous_port, 31000);
        // a world of one needs no master
        let e = DistEnv::from_vars(&vars(&[("WORLD_SIZE", "1")])).unwrap();
        assert_eq!((e.rank, e.world_size), (0, 1));
    }

    #[test]
    fn bad_values_name_the_variable_and_value() {
        let m = [("MASTER_ADDR", "h"), ("MASTER_PORT", "1234")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = m.to_vec();
            v.extend_from_slice(extra);
            err(&v)
        };
        let e = with(&[("RANK", "x"), ("WORLD_SIZE", "2")]);
        assert!(e.contains("RANK=\"x\"") && e.contains("integer"), "{e}");
        let e = with(&[("RANK", "2"), ("WORLD_SIZE", "2")]);
        assert!(
            e.contains("RANK=\"2\"") && e.contains("WORLD_SIZE=2"),
            "{e}"
        );
        let e = with(&[("RANK", "0"), ("WORLD_SIZE", "0")]);
        assert!(e.contains("WORLD_SIZE=\"0\""), "{e}");
        let e = with(&[("RANK", "1")]);
        assert!(e.contains("WORLD_SIZE") && e.contains("RANK=1"), "{e}");
        let e = with(&[("WORLD_SIZE", "4")]);
        assert!(e.starts_with("environment variable RANK"), "{e}");
        let e = with(&[("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "9")]);
        assert!(e.contains("LOCAL_RANK=\"9\""), "{e}");
        let e = with(&[("LOCAL_RANK", "0")]);
        assert!(
            e.contains("WORLD_SIZE") && e.contains("LOCAL_RANK=0"),
            "{e}"
        );
        let e = err(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]);
        assert!(e.contains("MASTER_ADDR") && e.contains("not set"), "{e}");
        let e = err(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]);
        assert!(e.contains("MASTER_PORT") && e.contains("not set"), "{e}");
        let e = with(&[("MASTER_PORT", "70000")]);
        assert!(e.contains("MASTER_PORT=\"70000\""), "{e}");
        let e = err(&[("MASTER_ADDR", " ")]);
        assert!(e.contains("MASTER_ADDR"), "{e}");
        let e = err(&[("YOLO_RDZV_PORT", "0")]);
        assert!(e.contains("YOLO_RDZV_PORT=\"0\""), "{e}");
        let e = err(&[
            ("MASTER_PORT", "65535"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        assert!(e.contains("YOLO_RDZV_PORT"), "{e}");
    }
}
