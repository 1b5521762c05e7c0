//! `yolo-forge train` under the torchrun environment: two real processes on the CPU train one
//! run together (rank 0 writes it, rank 1 writes nothing), and impossible set-ups exit 2.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Three strided convolutions and a one-level head: quick to train on a slow machine.
const TINY_YAML: &str = "
nc: 6
depth_multiple: 1.0
width_multiple: 1.0
anchors:
  - [10,13, 16,30, 33,23]
backbone:
  [[-1, 1, Conv, [4, 3, 2]],
   [-1, 1, Conv, [8, 3, 2]],
   [-1, 1, Conv, [8, 3, 2]],
  ]
head:
  [[[2], 1, Detect, [nc, anchors]]]
";

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("yf-ddp-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rank_cmd(rank: usize, world: usize, port: u16, args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_yolo-forge"));
    c.args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env_remove("TORCHELASTIC_USE_AGENT_STORE")
        .env_remove("YOLO_RDZV_PORT");
    c
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn two_cpu_processes_train_one_run_and_only_rank0_writes() {
    let dir = yolo_testutil::sample_copy("ddp-cli-run");
    std::fs::write(dir.join("tiny.yaml"), TINY_YAML).unwrap();
    let port = free_port();
    let args = |rank: usize| -> Vec<String> {
        [
            "train",
            "--device",
            "cpu",
            "--data",
            dir.join("data/data.yaml").to_str().unwrap(),
            "--cfg",
            dir.join("tiny.yaml").to_str().unwrap(),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--imgsz",
            "64",
            "--workers",
            "0",
            "--threads",
            "1",
            "--noautoanchor",
            "--noplots",
            "--project",
            dir.join(format!("rank{rank}")).to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let r1 = rank_cmd(1, 2, port, &args(1)).spawn().unwrap();
    let o0 = rank_cmd(0, 2, port, &args(0)).output().unwrap();
    let o1 = r1.wait_with_output().unwrap();
    assert!(o0.status.success(), "rank 0: {}", text(&o0));
    assert!(o1.status.success(), "rank 1: {}", text(&o1));
    let log0 = text(&o0);
    assert!(log0.contains("Data-parallel rank 0 of 2"), "{log0}");
    assert!(log0.contains("Results saved to"), "{log0}");
    let run = dir.join("rank0/exp");
    for f in ["results.csv", "weights/last.safetensors", "opt.yaml"] {
        assert!(run.join(f).exists(), "{f} missing: {log0}");
    }
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // rank 1 printed no summary and created nothing
    assert!(o1.stdout.is_empty(), "rank 1: {}", text(&o1));
    assert!(
        !dir.join("rank1").exists(),
        "rank 1 wrote its project folder"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn impossible_distributed_setups_exit_2_with_a_reason() {
    let dir = tmp("bad");
    #[cfg(not(feature = "nccl"))]
    {
        // CUDA devices across processes need the NCCL build
        let o = rank_cmd(
            0,
            2,
            free_port(),
            &["train".into(), "--device".into(), "0".into()],
        )
        .current_dir(&dir)
        .output()
        .unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains("NCCL") && t.contains("--features nccl"), "{t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    // a rank outside the world is an environment error, before any network
    let o = rank_cmd(
        2,
        2,
        free_port(),
        &["train".into(), "--device".into(), "cpu".into()],
    )
    .current_dir(&dir)
    .output()
    .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("RANK"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}
