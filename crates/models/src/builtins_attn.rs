//! Builders of the attention and fusion blocks of the YOLOv5 improvement forks (SE, CBAM, ECA,
//! CoordAtt, SimAM, SPD-Conv's `space_to_depth`, `BiFPN_Add2`/`BiFPN_Add3`), with the channel
//! rules those forks add to `parse_model`:
//!
//! - Attention rows keep their channels. They are written like conv rows, `[-1, 1, SE, [1024]]`:
//!   argument 0 is c2, width-scaled like a conv's, and must then equal the input's channels;
//!   the rest are the block's own arguments (`SE [c2, ratio]`, `CBAM [c2, ratio, kernel]`,
//!   `ECA [c2, k_size]`, `CoordAtt [c2, reduction]`, `SimAM [c2, e_lambda]`). With no arguments
//!   every block takes its defaults and c2 = c1.
//! - `space_to_depth [dimension]`: c2 = 4·c1; only dimension 1 exists.
//! - `BiFPN_Add2` / `BiFPN_Add3` take 2 / 3 inputs of one channel count c, and c2 = c (the forks'
//!   `max(ch[x] for x in f)`). Their optional arguments `[c1, c2]` are written in the forks as the
//!   actual (already scaled) channels; each must equal c as written or after width scaling.

use crate::config::Arg;
use crate::registry::{make_divisible, Built, Registry, RowInput};
use yolo_layers::{BiFpnAdd, Cbam, CoordAtt, Eca, Layer, Se, SimAm, SpaceToDepth};

fn built(layer: impl Layer + 'static, c2: usize, args: Vec<Arg>) -> Result<Built, String> {
    Ok(Built {
        layer: Box::new(layer),
        c2,
        args,
        uses_repeats: false,
    })
}

fn e<T>(r: yolo_layers::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// The channel rule of a channel-keeping attention row: c2 (argument 0, width-scaled) must equal
/// c1. Returns c1 and the arguments as the layer table prints them (`[c1, c2, *args[1:]]`).
fn keep_channels(row: &RowInput<'_>) -> Result<(usize, Vec<Arg>), String> {
    let c1 = row.c1();
    if row.args.is_empty() {
        return Ok((c1, Vec::new()));
    }
    let c2 = row.c2_scaled()?;
    if c2 != c1 {
        return Err(format!(
            "{} keeps its input's channels: argument 0 gives {c2} output channels after width \
             scaling, but the input has {c1}",
            row.module
        ));
    }
    Ok((c1, row.conv_args(c2)))
}

/// Registers the attention and fusion blocks.
pub(crate) fn register_attention(r: &mut Registry) {
    r.register("SE", |row| {
        let (c, args) = keep_channels(row)?;
        let ratio = row.usize_or(1, 16)?;
        built(e(Se::new(c, ratio, &row.ctx.init))?, c, args)
    });
    r.register("CBAM", |row| {
        let (c, args) = keep_channels(row)?;
        let (ratio, k) = (row.usize_or(1, 16)?, row.usize_or(2, 7)?);
        built(e(Cbam::new(c, ratio, k, &row.ctx.init))?, c, args)
    });
    r.register("ECA", |row| {
        let (c, args) = keep_channels(row)?;
        let k = row.usize_or(1, 3)?;
        built(e(Eca::new(k, &row.ctx.init))?, c, args)
    });
    r.register("CoordAtt", |row| {
        let (c, args) = keep_channels(row)?;
        let reduction = row.usize_or(1, 32)?;
        built(e(CoordAtt::new(c, c, reduction, &row.ctx.init))?, c, args)
    });
    r.register("SimAM", |row| {
        let (c, args) = keep_channels(row)?;
        let e_lambda = row.f64_or(1, 1e-4)?;
        if e_lambda.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(format!("SimAM e_lambda must be positive, got {e_lambda}"));
        }
        built(
            SimAm {
                e_lambda: e_lambda as f32,
            },
            c,
            args,
        )
    });
    r.register("space_to_depth", |row| {
        let d = row.usize_or(0, 1)?;
        if d != 1 {
            return Err(format!(
                "space_to_depth concatenates along the channels (dimension 1), got dimension {d}"
            ));
        }
        built(
            SpaceToDepth { dimension: d },
            4 * row.c1(),
            row.args.clone(),
        )
    });
    bifpn_add(r, "BiFPN_Add2", 2);
    bifpn_add(r, "BiFPN_Add3", 3);
}

fn bifpn_add(r: &mut Registry, name: &'static str, inputs: usize) {
    r.register(name, move |row| {
        if row.ch_in.len() != inputs {
            return Err(format!(
                "{name} adds {inputs} inputs, but `from` lists {}",
                row.ch_in.len()
            ));
        }
        let c = row.c1();
        if row.ch_in.iter().any(|&ci| ci != c) {
            return Err(format!(
                "{name} adds inputs of equal channels, got {:?}",
                row.ch_in
            ));
        }
        for i in 0..row.args.len().min(2) {
            let a = row.usize_or(i, 0)?;
            if a != c && make_divisible(a as f64 * row.gw, row.ch_mul) != c {
                return Err(format!(
                    "{name} argument {i} is {a}, but its inputs have {c} channels"
                ));
            }
        }
        let args = vec![Arg::Int(c as i64), Arg::Int(c as i64)];
        built(e(BiFpnAdd::new(inputs, c, c, &row.ctx.init))?, c, args)
    });
}
