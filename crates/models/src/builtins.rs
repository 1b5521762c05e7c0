//! Builders of the built-in modules, applying upstream `parse_model`'s channel rules.

use crate::config::{Anchors, Arg};
use crate::registry::{Built, Registry, RowInput};
use yolo_layers::{
    dw_conv, Bottleneck, BottleneckCsp, C3Kind, Concat, Contract, Conv, Detect, Expand, Focus,
    GhostBottleneck, GhostConv, Layer, MaxPool2d, Spp, Sppf, Upsample, ZeroPad2d, C3,
};
use yolo_tensor::Pool2dParams;

fn ok(
    layer: impl Layer + 'static,
    c2: usize,
    args: Vec<Arg>,
    uses_repeats: bool,
) -> Result<Built, String> {
    Ok(Built {
        layer: Box::new(layer),
        c2,
        args,
        uses_repeats,
    })
}

fn e<T>(r: yolo_layers::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn c3_like(r: &mut Registry, name: &str, kind: C3Kind) {
    r.register(name, move |row: &RowInput<'_>| {
        let c2 = row.c2_scaled()?;
        // Upstream inserts the repeat count as argument 2: C3(c1, c2, n, shortcut, g, e).
        let (shortcut, g, ex) = (
            row.bool_or(1, true)?,
            row.usize_or(2, 1)?,
            row.f64_or(3, 0.5)?,
        );
        let mut args = row.conv_args(c2);
        args.insert(2, Arg::Int(row.n as i64));
        let layer = e(C3::new(kind, row.c1(), c2, row.n, shortcut, g, ex, row.ctx))?;
        ok(layer, c2, args, true)
    });
}

/// Registers every built-in module.
pub(crate) fn register_all(r: &mut Registry) {
    crate::builtins_attn::register_attention(r);
    r.register("Conv", |row| {
        let c2 = row.c2_scaled()?;
        let (k, s, p, g, d, act) = (
            row.usize_or(1, 1)?,
            row.usize_or(2, 1)?,
            row.opt_usize(3)?,
            row.usize_or(4, 1)?,
            row.usize_or(5, 1)?,
            row.act(6)?,
        );
        ok(
            e(Conv::new(row.c1(), c2, k, s, p, g, d, act, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("DWConv", |row| {
        let c2 = row.c2_scaled()?;
        let (k, s, d, act) = (
            row.usize_or(1, 1)?,
            row.usize_or(2, 1)?,
            row.usize_or(3, 1)?,
            row.act(4)?,
        );
        ok(
            e(dw_conv(row.c1(), c2, k, s, d, act, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("Focus", |row| {
        let c2 = row.c2_scaled()?;
        let (k, s, p, g, act) = (
            row.usize_or(1, 1)?,
            row.usize_or(2, 1)?,
            row.opt_usize(3)?,
            row.usize_or(4, 1)?,
            row.act(5)?,
        );
        ok(
            e(Focus::new(row.c1(), c2, k, s, p, g, act, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("Bottleneck", |row| {
        let c2 = row.c2_scaled()?;
        let (sc, g, ex) = (
            row.bool_or(1, true)?,
            row.usize_or(2, 1)?,
            row.f64_or(3, 0.5)?,
        );
        ok(
            e(Bottleneck::new(row.c1(), c2, sc, g, ex, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("CrossConv", |row| {
        let c2 = row.c2_scaled()?;
        let (k, s, g, ex, sc) = (
            row.usize_or(1, 3)?,
            row.usize_or(2, 1)?,
            row.usize_or(3, 1)?,
            row.f64_or(4, 1.0)?,
            row.bool_or(5, false)?,
        );
        ok(
            e(Bottleneck::cross(row.c1(), c2, k, s, g, ex, sc, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("BottleneckCSP", |row| {
        let c2 = row.c2_scaled()?;
        let (sc, g, ex) = (
            row.bool_or(1, true)?,
            row.usize_or(2, 1)?,
            row.f64_or(3, 0.5)?,
        );
        let mut args = row.conv_args(c2);
        args.insert(2, Arg::Int(row.n as i64));
        ok(
            e(BottleneckCsp::new(row.c1(), c2, row.n, sc, g, ex, row.ctx))?,
            c2,
            args,
            true,
        )
    });
    c3_like(r, "C3", C3Kind::Bottleneck);
    c3_like(r, "C3x", C3Kind::Cross);
    c3_like(r, "C3Ghost", C3Kind::Ghost);
    c3_like(r, "C3TR", C3Kind::Transformer);
    r.register("SPP", |row| {
        let c2 = row.c2_scaled()?;
        let k: Vec<usize> = match row.arg(1) {
            None => vec![5, 9, 13],
            Some(Arg::List(l)) => l
                .iter()
                .map(|a| a.as_int().filter(|&v| v > 0).map(|v| v as usize))
                .collect::<Option<_>>()
                .ok_or("SPP kernel sizes must be positive integers")?,
            Some(a) => {
                return Err(format!(
                    "SPP argument 1 must be a list of kernel sizes, got {a}"
                ))
            }
        };
        ok(
            e(Spp::new(row.c1(), c2, &k, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("SPPF", |row| {
        let c2 = row.c2_scaled()?;
        let k = row.usize_or(1, 5)?;
        ok(
            e(Sppf::new(row.c1(), c2, k, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("GhostConv", |row| {
        let c2 = row.c2_scaled()?;
        let (k, s, g, act) = (
            row.usize_or(1, 1)?,
            row.usize_or(2, 1)?,
            row.usize_or(3, 1)?,
            row.act(4)?,
        );
        ok(
            e(GhostConv::new(row.c1(), c2, k, s, g, act, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("GhostBottleneck", |row| {
        let c2 = row.c2_scaled()?;
        let (k, s) = (row.usize_or(1, 3)?, row.usize_or(2, 1)?);
        ok(
            e(GhostBottleneck::new(row.c1(), c2, k, s, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("nn.Upsample", |row| {
        if let Some(Arg::Text(mode)) = row.arg(2) {
            if mode != "nearest" {
                return Err(format!(
                    "only 'nearest' upsampling is supported, got '{mode}'"
                ));
            }
        }
        let s = row.f64_or(1, 2.0)?;
        if s < 1.0 || s.fract() != 0.0 {
            return Err(format!("upsampling needs an integer scale factor, got {s}"));
        }
        ok(Upsample(s as usize), row.c1(), row.args.clone(), false)
    });
    r.register("nn.MaxPool2d", |row| {
        let k = row.usize_or(0, 0)?;
        if k == 0 {
            return Err("nn.MaxPool2d needs a positive kernel size".into());
        }
        let (s, p) = (row.opt_usize(1)?.unwrap_or(k), row.usize_or(2, 0)?);
        ok(
            MaxPool2d(Pool2dParams::new(k, s, p)),
            row.c1(),
            row.args.clone(),
            false,
        )
    });
    r.register("nn.ZeroPad2d", |row| {
        let p: Vec<usize> = match row.arg(0) {
            Some(Arg::List(l)) => l
                .iter()
                .map(|a| a.as_int().filter(|&v| v >= 0).map(|v| v as usize))
                .collect::<Option<_>>()
                .ok_or("padding must be non-negative integers")?,
            Some(a) => vec![
                a.as_int()
                    .filter(|&v| v >= 0)
                    .ok_or("padding must be a non-negative integer")?
                    as usize;
                4
            ],
            None => return Err("nn.ZeroPad2d needs a padding".into()),
        };
        let p: [usize; 4] = p.try_into().map_err(|_| {
            "nn.ZeroPad2d padding needs 4 values (left, right, top, bottom)".to_string()
        })?;
        ok(ZeroPad2d(p), row.c1(), row.args.clone(), false)
    });
    r.register("Concat", |row| {
        let d = match row.arg(0) {
            None => 1,
            Some(a) => a
                .as_int()
                .ok_or_else(|| format!("Concat dimension must be an integer, got {a}"))?,
        };
        ok(
            Concat(d as isize),
            row.ch_in.iter().sum(),
            row.args.clone(),
            false,
        )
    });
    r.register("Contract", |row| {
        let g = row.usize_or(0, 2)?;
        ok(Contract(g), row.c1() * g * g, row.args.clone(), false)
    });
    r.register("Expand", |row| {
        let g = row.usize_or(0, 2)?;
        ok(
            Expand(g),
            row.c1() / (g * g).max(1),
            row.args.clone(),
            false,
        )
    });
    r.register("Detect", |row| {
        let anchors = detect_anchors(row)?;
        let d = e(Detect::new(row.nc, &anchors, &row.ch_in, row.ctx))?;
        let mut args = row.args.clone();
        args.push(Arg::List(
            row.ch_in.iter().map(|&c| Arg::Int(c as i64)).collect(),
        ));
        let c2 = d.na * d.no;
        ok(d, c2, args, false)
    });
    crate::builtins_v7::register_v7(r);
}

/// Anchors of a Detect row: the model's explicit anchors, or placeholders when only a count is
/// given (AutoAnchor replaces them before training).
pub(crate) fn detect_anchors(row: &RowInput<'_>) -> Result<Vec<Vec<f64>>, String> {
    let nl = row.ch_in.len();
    let placeholder = |na: usize| -> Vec<Vec<f64>> {
        (0..nl)
            .map(|l| {
                (0..na)
                    .flat_map(|a| {
                        let s = (8u64 << l) as f64 * (a + 1) as f64;
                        [s, s]
                    })
                    .collect()
            })
            .collect()
    };
    match row.arg(1) {
        Some(Arg::List(levels)) => levels
            .iter()
            .map(|l| match l {
                Arg::List(v) => v
                    .iter()
                    .map(|x| {
                        x.as_f64()
                            .ok_or_else(|| "anchor sizes must be numbers".to_string())
                    })
                    .collect(),
                _ => Err("anchors must be a list of lists".to_string()),
            })
            .collect(),
        Some(Arg::Int(na)) if *na > 0 => Ok(placeholder(*na as usize)),
        None => match row.anchors {
            Anchors::Sizes(s) => Ok(s.clone()),
            Anchors::Count(n) => Ok(placeholder(*n)),
        },
        Some(a) => Err(format!("Detect argument 1 must be anchors, got {a}")),
    }
}
