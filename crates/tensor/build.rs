//! Compiles the CUDA kernels a second time, as plain C for the CPU, into the CUDA emulator
//! (`cuda::emu`): with one block of one thread, every grid-stride kernel runs sequentially and
//! the block reductions reduce to their thread's own sum, so the very code that NVRTC compiles
//! for the GPU can be executed and checked against the CPU backend on machines without a GPU.

use std::fmt::Write as _;

fn main() {
    let src_path = "src/cuda/kernels.cu";
    println!("cargo:rerun-if-changed={src_path}");
    println!("cargo:rerun-if-changed=build.rs");
    let src = std::fs::read_to_string(src_path).expect("read kernels.cu");
    let prelude = r#"
#include <math.h>
#include <string.h>
typedef struct { unsigned int x, y, z; } yf_dim3;
static const yf_dim3 blockIdx = {0, 0, 0};
static const yf_dim3 threadIdx = {0, 0, 0};
static const yf_dim3 blockDim = {1, 1, 1};
static const yf_dim3 gridDim = {1, 1, 1};
#define __global__
#define __device__ static
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() ((void)0)
static inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline void atomicAdd(float* p, float v) { *p += v; }
typedef struct Dims Dims;
typedef struct ConvG ConvG;
typedef struct PoolG PoolG;
"#;
    let body = src.replace("extern \"C\" ", "");
    let mut out = String::from(prelude);
    out.push_str(&body);
    // One trampoline per kernel: `yf_emu_launch(name, args)` calls it with CUDA's kernelParams
    // convention (an array of pointers to each argument's value).
    let mut dispatch = String::from("\nint yf_emu_launch(const char* name, void** a) {\n");
    for part in src.split("extern \"C\" __global__ void ").skip(1) {
        let name = part[..part.find('(').unwrap()].trim();
        let params = &part[part.find('(').unwrap() + 1..part.find(')').unwrap()];
        let mut call = Vec::new();
        for (i, p) in params.split(',').enumerate() {
            let p = p.trim();
            let cut = p
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |k| k + 1);
            let ty = p[..cut].trim();
            call.push(format!("*({ty}*)a[{i}]"));
        }
        writeln!(
            dispatch,
            "    if (strcmp(name, \"{name}\") == 0) {{ {name}({}); return 0; }}",
            call.join(", ")
        )
        .unwrap();
    }
    dispatch.push_str("    return -1;\n}\n");
    out.push_str(&dispatch);
    let dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    let c_path = format!("{dir}/yf_kernels_emu.c");
    std::fs::write(&c_path, out).expect("write emulator source");
    cc::Build::new()
        .file(&c_path)
        .std("c11")
        .opt_level(2)
        .flag_if_supported("-Wno-unused-function")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unused-variable")
        .flag_if_supported("-Wno-unused-const-variable")
        .flag_if_supported("-ffp-contract=off")
        .warnings(false)
        .compile("yf_kernels_emu");
}
