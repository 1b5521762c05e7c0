//! Builders of the YOLOv7 modules, applying the channel rules of YOLOv7's `parse_model`:
//! RepConv, DownC and SPPCSPC are conv-like (DownC and SPPCSPC also take the repeat count),
//! `Shortcut` keeps the first input's channels, `ReOrg` quadruples them, pools keep them, and
//! the heads get the list of input channels.

use crate::builtins::detect_anchors;
use crate::config::{Anchors, Arg};
use crate::registry::{Built, Registry, RowInput};
use yolo_layers::{
    mp, sp, Conv, DownC, IAuxDetect, IDetect, Layer, ReOrg, RepConv, Shortcut, Sppcspc,
};

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

/// Argument `i` as a list of positive kernel sizes, or `default`.
fn kernels(row: &RowInput<'_>, i: usize, default: &[usize]) -> Result<Vec<usize>, String> {
    match row.arg(i) {
        None => Ok(default.to_vec()),
        Some(Arg::List(l)) => l
            .iter()
            .map(|a| a.as_int().filter(|&v| v > 0).map(|v| v as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| "kernel sizes must be positive integers".to_string()),
        Some(a) => Err(format!(
            "argument {i} must be a list of kernel sizes, got {a}"
        )),
    }
}

/// A head's argument list as upstream prints it: the row's arguments plus the input channels.
fn head_args(row: &RowInput<'_>) -> Vec<Arg> {
    let mut args = row.args.clone();
    args.push(Arg::List(
        row.ch_in.iter().map(|&c| Arg::Int(c as i64)).collect(),
    ));
    args
}

/// Registers the YOLOv7 modules (after the YOLOv5 ones: `Conv` is extended, not replaced).
pub(crate) fn register_v7(r: &mut Registry) {
    // YOLOv7's Conv(c1, c2, k, s, p, g, act) has no dilation, so an activation (yolov7-tiny's
    // `nn.LeakyReLU(0.1)`) or True/False sits where YOLOv5 has `d`; every other row goes to
    // the YOLOv5 builder unchanged.
    if let Some(v5_conv) = r.get("Conv") {
        r.register("Conv", move |row| {
            if row.args.len() != 6 || !matches!(row.arg(5), Some(Arg::Text(_) | Arg::Bool(_))) {
                return v5_conv(row);
            }
            let c2 = row.c2_scaled()?;
            let (k, s, p, g, act) = (
                row.usize_or(1, 1)?,
                row.usize_or(2, 1)?,
                row.opt_usize(3)?,
                row.usize_or(4, 1)?,
                row.act(5)?,
            );
            ok(
                e(Conv::new(row.c1(), c2, k, s, p, g, 1, act, row.ctx))?,
                c2,
                row.conv_args(c2),
                false,
            )
        });
    }
    r.register("RepConv", |row| {
        let c2 = row.c2_scaled()?;
        let (k, s, p, g, act) = (
            row.usize_or(1, 3)?,
            row.usize_or(2, 1)?,
            row.opt_usize(3)?,
            row.usize_or(4, 1)?,
            row.act(5)?,
        );
        ok(
            e(RepConv::new(row.c1(), c2, k, s, p, g, act, row.ctx))?,
            c2,
            row.conv_args(c2),
            false,
        )
    });
    r.register("DownC", |row| {
        let c2 = row.c2_scaled()?;
        let k = row.usize_or(1, 2)?;
        let mut args = row.conv_args(c2);
        args.insert(2, Arg::Int(row.n as i64));
        // Upstream hands the repeat count to DownC, which ignores it: one block.
        ok(e(DownC::new(row.c1(), c2, k, row.ctx))?, c2, args, true)
    });
    r.register("SPPCSPC", |row| {
        let c2 = row.c2_scaled()?;
        // SPPCSPC(c1, c2, n, shortcut, g, e, k): n, shortcut and g are unused upstream.
        row.bool_or(1, false)?;
        row.usize_or(2, 1)?;
        let ex = row.f64_or(3, 0.5)?;
        let k = kernels(row, 4, &[5, 9, 13])?;
        let mut args = row.conv_args(c2);
        args.insert(2, Arg::Int(row.n as i64));
        ok(
            e(Sppcspc::new(row.c1(), c2, ex, &k, row.ctx))?,
            c2,
            args,
            true,
        )
    });
    r.register("MP", |row| {
        let k = row.usize_or(0, 2)?;
        if k == 0 {
            return Err("MP needs a positive kernel size".into());
        }
        ok(mp(k), row.c1(), row.args.clone(), false)
    });
    r.register("SP", |row| {
        let (k, s) = (row.usize_or(0, 3)?, row.usize_or(1, 1)?);
        if k == 0 || s == 0 {
            return Err("SP needs a positive kernel size and stride".into());
        }
        ok(sp(k, s), row.c1(), row.args.clone(), false)
    });
    r.register("ReOrg", |row| {
        ok(ReOrg, row.c1() * 4, row.args.clone(), false)
    });
    r.register("Shortcut", |row| {
        if row.ch_in.len() < 2 {
            return Err("Shortcut needs two inputs".into());
        }
        ok(Shortcut, row.c1(), row.args.clone(), false)
    });
    r.register("IDetect", |row| {
        let anchors = detect_anchors(row)?;
        let d = e(IDetect::new(row.nc, &anchors, &row.ch_in, row.ctx))?;
        let c2 = d.det.na * d.det.no;
        ok(d, c2, head_args(row), false)
    });
    r.register("IAuxDetect", |row| {
        let mut anchors = detect_anchors(row)?;
        // A bare anchor count makes one placeholder level per input; the head has half as
        // many levels (main, then auxiliary inputs).
        let counted = match row.arg(1) {
            Some(Arg::Int(_)) => true,
            None => matches!(row.anchors, Anchors::Count(_)),
            _ => false,
        };
        if counted {
            anchors.truncate(row.ch_in.len() / 2);
        }
        let d = e(IAuxDetect::new(row.nc, &anchors, &row.ch_in, row.ctx))?;
        let c2 = d.det.na * d.det.no;
        ok(d, c2, head_args(row), false)
    });
}
