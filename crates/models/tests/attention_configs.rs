//! The attention variants of yolov5s (`configs/models/yolov5s-{se,cbam,eca,coordatt,simam}.yaml`,
//! one block inserted after SPPF) and `yolov5s-bifpn-add.yaml` build, run at 64×64 in training
//! and inference mode, and have exactly yolov5s's parameters and GFLOPs plus the block's own
//! (from its formula); the builders' channel rules and argument handling, SPD-Conv's
//! `space_to_depth` rows, and their errors.

use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};

use yolo_testutil::root;

fn load(name: &str) -> Model {
    let cfg = ModelConfig::from_file(root().join("configs/models").join(name))
        .unwrap_or_else(|e| panic!("{e}"));
    Model::new(cfg, 0).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn yaml(name: &str) -> String {
    std::fs::read_to_string(root().join("configs/models").join(name)).unwrap()
}

/// Forward passes at 64×64 in training and inference mode; checks the head's output shapes.
fn run_both_modes(model: &Model, name: &str) {
    let nc = model.config.nc;
    let x = Tensor::from_vec(
        (0..2 * 3 * 64 * 64)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect(),
        &[2, 3, 64, 64],
        Device::Cpu,
    )
    .unwrap();
    let out = model
        .forward(&x, true)
        .unwrap_or_else(|e| panic!("{name} train: {e}"));
    let levels: Vec<Vec<usize>> = model
        .stride
        .iter()
        .map(|&s| vec![2, 3, 64 / s as usize, 64 / s as usize, nc + 5])
        .collect();
    let shapes: Vec<Vec<usize>> = out.raw.iter().map(|t| t.shape().to_vec()).collect();
    assert_eq!(shapes, levels, "{name}: training outputs");
    assert!(out.pred.is_none());
    let out = {
        let _g = yolo_tensor::no_grad();
        model
            .forward(&x, false)
            .unwrap_or_else(|e| panic!("{name} eval: {e}"))
    };
    let cells: usize = levels.iter().map(|l| 3 * l[2] * l[3]).sum();
    let pred = out.pred.expect("inference output");
    assert_eq!(pred.shape(), &[2, cells, nc + 5], "{name}: predictions");
    assert!(
        pred.to_vec().iter().all(|v| v.is_finite()),
        "{name}: finite predictions"
    );
}

/// One attention block's parameters and thop multiply-accumulates on an N=1, c×h×w input.
struct BlockCost {
    params: usize,
    macs: usize,
}

fn se_cost(c: usize, r: usize, hw: usize) -> BlockCost {
    let hid = c / r;
    BlockCost {
        params: 2 * c * hid,
        macs: (hw + 1) * c + 2 * c * hid,
    }
}

fn cbam_cost(c: usize, r: usize, k: usize, hw: usize) -> BlockCost {
    let hid = c / r;
    BlockCost {
        params: 2 * c * hid + 2 * k * k,
        macs: (hw + 1) * c + 4 * c * hid + hw * 2 * k * k,
    }
}

fn eca_cost(c: usize, k: usize, hw: usize) -> BlockCost {
    BlockCost {
        params: k,
        macs: (hw + 1) * c + c * k,
    }
}

fn coordatt_cost(c: usize, reduction: usize, h: usize, w: usize) -> BlockCost {
    let mip = (c / reduction).max(8);
    BlockCost {
        params: (c * mip + mip) + 2 * mip + 2 * (mip * c + c),
        macs: (w + 1) * c * h
            + (h + 1) * c * w
            + mip * (h + w) * c
            + 4 * mip * (h + w)
            + c * h * mip
            + c * w * mip,
    }
}

#[test]
fn attention_variants_of_yolov5s_add_exactly_their_block() {
    let base = load("yolov5s.yaml");
    let base_info = base.info(640).unwrap();
    assert_eq!(base_info.params, 7_235_389, "yolov5s parameters");
    let base_rows = base.layer_table();
    let mut base_fused = load("yolov5s.yaml");
    base_fused.fuse().unwrap();
    let base_fused_params = base_fused.info(640).unwrap().params;

    // After SPPF yolov5s has 1024·0.5 = 512 channels; info() profiles at 32×32 (1×1 there).
    let c = 512;
    let cases = [
        ("yolov5s-se.yaml", "SE", se_cost(c, 16, 1)),
        ("yolov5s-cbam.yaml", "CBAM", cbam_cost(c, 16, 7, 1)),
        ("yolov5s-eca.yaml", "ECA", eca_cost(c, 3, 1)),
        (
            "yolov5s-coordatt.yaml",
            "CoordAtt",
            coordatt_cost(c, 32, 1, 1),
        ),
        (
            "yolov5s-simam.yaml",
            "SimAM",
            BlockCost { params: 0, macs: 0 },
        ),
    ];
    let expected_params = [32_768, 32_866, 3, 25_648, 0];
    for ((name, module, cost), want) in cases.iter().zip(expected_params) {
        assert_eq!(cost.params, want, "{name}: formula");
        let model = load(name);
        let info = model.info(640).unwrap();
        assert_eq!(info.layers, base_info.layers + 1, "{name}: one more layer");
        assert_eq!(
            info.params,
            base_info.params + cost.params,
            "{name}: yolov5s + {module}"
        );
        assert_eq!(info.gradients, info.params, "{name}: all trainable");
        let dg = info.gflops - base_info.gflops;
        let want_dg = 2.0 * cost.macs as f64 / 1e9 * (640.0f64 / 32.0).powi(2);
        assert!(
            (dg - want_dg).abs() < 1e-9,
            "{name}: {dg} extra GFLOPs, thop rules give {want_dg}"
        );

        let rows = model.layer_table();
        let row = &rows[10];
        assert_eq!(row.module, *module);
        assert_eq!(row.from, "-1");
        assert_eq!(row.params, cost.params, "{name}: row 10");
        assert_eq!(row.args, "[512, 512]", "{name}: row 10 arguments");
        // Every other row is yolov5s's, one index later after the block.
        for (i, r) in rows.iter().enumerate().filter(|(i, _)| *i != 10) {
            let b = &base_rows[if i < 10 { i } else { i - 1 }];
            assert_eq!(
                (&r.module, r.params, &r.args),
                (&b.module, b.params, &b.args),
                "{name}: row {i}"
            );
        }
        assert_eq!(rows.last().unwrap().from, "[18, 21, 24]");
        assert_eq!(model.stride, vec![8.0, 16.0, 32.0], "{name}: strides");
        // The block's tensors sit under model.10 with the forks' names.
        let names: Vec<String> = model
            .named_tensors()
            .into_iter()
            .map(|(n, _, _)| n)
            .filter(|n| n.starts_with("model.10."))
            .collect();
        let want_names: Vec<&str> = match *module {
            "SE" => vec!["model.10.l1.weight", "model.10.l2.weight"],
            "CBAM" => vec![
                "model.10.channel_attention.f1.weight",
                "model.10.channel_attention.f2.weight",
                "model.10.spatial_attention.conv.weight",
            ],
            "ECA" => vec!["model.10.conv.weight"],
            "CoordAtt" => vec![
                "model.10.conv1.weight",
                "model.10.conv1.bias",
                "model.10.bn1.weight",
                "model.10.bn1.bias",
                "model.10.bn1.running_mean",
                "model.10.bn1.running_var",
                "model.10.conv_h.weight",
                "model.10.conv_h.bias",
                "model.10.conv_w.weight",
                "model.10.conv_w.bias",
            ],
            _ => vec![],
        };
        assert_eq!(names, want_names, "{name}: state_dict names");

        run_both_modes(&model, name);

        // Fusing folds the Conv batch norms as in yolov5s and leaves the block alone.
        let mut fused = load(name);
        fused.fuse().unwrap();
        assert_eq!(
            fused.info(640).unwrap().params,
            base_fused_params + cost.params,
            "{name}: fused"
        );
        run_both_modes(&fused, name);
    }
}

#[test]
fn attention_configs_are_yolov5s_plus_one_row() {
    let base = ModelConfig::from_file(root().join("configs/models/yolov5s.yaml")).unwrap();
    for (name, module) in [
        ("yolov5s-se.yaml", "SE"),
        ("yolov5s-cbam.yaml", "CBAM"),
        ("yolov5s-eca.yaml", "ECA"),
        ("yolov5s-coordatt.yaml", "CoordAtt"),
        ("yolov5s-simam.yaml", "SimAM"),
    ] {
        let cfg = ModelConfig::from_file(root().join("configs/models").join(name)).unwrap();
        assert_eq!(cfg.backbone_len, base.backbone_len + 1, "{name}");
        assert_eq!(cfg.rows.len(), base.rows.len() + 1, "{name}");
        assert_eq!(cfg.rows[10].module, module, "{name}");
        let text = yaml(name);
        assert!(
            text.contains("inserted\n# as layer 10"),
            "{name}: header comment"
        );
        for (i, row) in cfg.rows.iter().enumerate().filter(|(i, _)| *i != 10) {
            let b = &base.rows[if i < 10 { i } else { i - 1 }];
            assert_eq!(
                (&row.module, &row.args),
                (&b.module, &b.args),
                "{name}: row {i}"
            );
            // Absolute indices at or past the insertion point move up by one.
            let shift = |f: i64| if f >= 10 { f + 1 } else { f };
            let want: Vec<i64> = b.from.indices().into_iter().map(shift).collect();
            assert_eq!(row.from.indices(), want, "{name}: row {i} from");
        }
        assert_eq!(
            (cfg.nc, cfg.depth_multiple, cfg.width_multiple, &cfg.anchors),
            (
                base.nc,
                base.depth_multiple,
                base.width_multiple,
                &base.anchors
            )
        );
    }
}

#[test]
fn bifpn_add_config_builds_and_runs() {
    let model = load("yolov5s-bifpn-add.yaml");
    let rows = model.layer_table();
    let bifpn = |c: usize, inputs: usize| inputs + c * c + c;
    let want = [
        (12, "BiFPN_Add2", "[-1, 6]", bifpn(256, 2)),
        (16, "BiFPN_Add2", "[-1, 4]", bifpn(128, 2)),
        (19, "BiFPN_Add3", "[-1, 13, 6]", bifpn(256, 3)),
        (22, "BiFPN_Add2", "[-1, 10]", bifpn(256, 2)),
    ];
    for (i, module, from, params) in want {
        assert_eq!(
            (
                rows[i].module.as_str(),
                rows[i].from.as_str(),
                rows[i].params
            ),
            (module, from, params),
            "row {i}"
        );
        assert_eq!(model.nodes[i].c2, if i == 16 { 128 } else { 256 });
    }
    assert_eq!(rows[16].args, "[128, 128]");
    assert_eq!(bifpn(256, 2), 65_794);
    assert_eq!(bifpn(256, 3), 65_795);
    let names: Vec<String> = model
        .named_tensors()
        .into_iter()
        .map(|(n, _, _)| n)
        .filter(|n| n.starts_with("model.19."))
        .collect();
    assert_eq!(
        names,
        ["model.19.w", "model.19.conv.weight", "model.19.conv.bias"]
    );
    assert_eq!(model.stride, vec![8.0, 16.0, 32.0]);
    run_both_modes(&model, "yolov5s-bifpn-add.yaml");
}

/// A small model exercising every builder's own arguments, SPD-Conv's `space_to_depth` after a
/// stride-1 Conv, and both BiFPN argument spellings (as written, and width-scaled).
const MIXED: &str = "
nc: 3
depth_multiple: 1.0
width_multiple: 0.25
anchors:
  - [10, 13, 16, 30, 33, 23]
  - [30, 61, 62, 45, 59, 119]
backbone:
  [[-1, 1, Conv, [64, 3, 2]],          # 0 P1/2, 16
   [-1, 1, Conv, [64, 3, 1]],          # 1 16
   [-1, 1, space_to_depth, [1]],       # 2 P2/4, 64
   [-1, 1, Conv, [128, 3, 1]],         # 3 32
   [-1, 1, space_to_depth, [1]],       # 4 P3/8, 128
   [-1, 1, SE, [512, 8]],              # 5
   [-1, 1, CBAM, [512, 8, 3]],         # 6
   [-1, 1, ECA, [512, 5]],             # 7
   [-1, 1, CoordAtt, [512, 16]],       # 8
   [-1, 1, SimAM, []],                 # 9
   [-1, 1, Conv, [512, 3, 2]],         # 10 P4/16, 128
  ]
head:
  [[-1, 1, nn.Upsample, [None, 2, 'nearest']],  # 11
   [[-1, 9], 1, BiFPN_Add2, [128, 128]],         # 12 P3
   [-1, 1, Conv, [512, 3, 2]],                    # 13 P4
   [[-1, 10, 10], 1, BiFPN_Add3, [512, 512]],     # 14 P4
   [[12, 14], 1, Detect, [nc, anchors]],
  ]
";

#[test]
fn builders_read_their_arguments_and_space_to_depth_quadruples_channels() {
    let model = Model::new(ModelConfig::from_yaml(MIXED).unwrap(), 0).unwrap();
    let c2: Vec<usize> = model.nodes.iter().map(|n| n.c2).collect();
    assert_eq!(
        &c2[..15],
        &[16, 16, 64, 32, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128]
    );
    let rows = model.layer_table();
    let p: Vec<usize> = rows.iter().map(|r| r.params).collect();
    let conv = |c1: usize, c2: usize, k: usize| c1 * c2 * k * k + 2 * c2;
    assert_eq!(p[2], 0);
    assert_eq!(
        p[3],
        conv(64, 32, 3),
        "Conv after space_to_depth sees 4·16 channels"
    );
    assert_eq!(p[4], 0);
    assert_eq!(p[5], se_cost(128, 8, 1).params);
    assert_eq!(p[5], 4096);
    assert_eq!(p[6], cbam_cost(128, 8, 3, 1).params);
    assert_eq!(p[6], 4114);
    assert_eq!(p[7], 5);
    assert_eq!(p[8], coordatt_cost(128, 16, 1, 1).params);
    assert_eq!(p[8], 3352);
    assert_eq!(p[9], 0);
    assert_eq!(p[12], 2 + 128 * 128 + 128);
    assert_eq!(p[14], 3 + 128 * 128 + 128);
    assert_eq!(rows[2].args, "[1]");
    assert_eq!(rows[5].args, "[128, 128, 8]");
    assert_eq!(rows[6].args, "[128, 128, 8, 3]");
    assert_eq!(rows[9].args, "[]");
    assert_eq!(rows[14].args, "[128, 128]");
    assert_eq!(model.stride, vec![8.0, 16.0]);
    run_both_modes(&model, "mixed");
}

fn build_err(text: &str) -> String {
    match Model::new(ModelConfig::from_yaml(text).unwrap(), 0) {
        Ok(_) => panic!("built, but should fail:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn channel_and_argument_errors_name_the_row() {
    let se = yaml("yolov5s-se.yaml");
    // SE [512] after SPPF: 512·0.5 = 256 output channels, but its input has 512.
    let e = build_err(&se.replace("[-1, 1, SE, [1024]]", "[-1, 1, SE, [512]]"));
    assert!(
        e.contains("layer 10 (SE)") && e.contains("256") && e.contains("512"),
        "{e}"
    );
    let e = build_err(&se.replace("[-1, 1, SE, [1024]]", "[-1, 1, SE, [1024, 1024]]"));
    assert!(e.contains("layer 10 (SE)") && e.contains("hidden"), "{e}");
    let e = build_err(&se.replace("[-1, 1, SE, [1024]]", "[-1, 1, CBAM, [1024, 16, 4]]"));
    assert!(e.contains("layer 10 (CBAM)") && e.contains("odd"), "{e}");
    let e = build_err(&se.replace("[-1, 1, SE, [1024]]", "[-1, 1, ECA, [1024, 2]]"));
    assert!(e.contains("layer 10 (ECA)") && e.contains("odd"), "{e}");
    let e = build_err(&se.replace("[-1, 1, SE, [1024]]", "[-1, 1, CoordAtt, [2048]]"));
    assert!(e.contains("layer 10 (CoordAtt)"), "{e}");
    let e = build_err(&se.replace("[-1, 1, SE, [1024]]", "[-1, 1, SimAM, [1024, 0]]"));
    assert!(
        e.contains("layer 10 (SimAM)") && e.contains("positive"),
        "{e}"
    );
    let e = build_err(&se.replace("[-1, 1, SE, [1024]]", "[-1, 1, space_to_depth, [2]]"));
    assert!(
        e.contains("layer 10 (space_to_depth)") && e.contains("dimension"),
        "{e}"
    );

    let bi = yaml("yolov5s-bifpn-add.yaml");
    let e = build_err(&bi.replace(
        "[[-1, 6], 1, BiFPN_Add2, [256, 256]]",
        "[[-1, 6, 4], 1, BiFPN_Add2, [256, 256]]",
    ));
    assert!(
        e.contains("layer 12 (BiFPN_Add2)") && e.contains("3"),
        "{e}"
    );
    let e = build_err(&bi.replace(
        "[[-1, 6], 1, BiFPN_Add2, [256, 256]]",
        "[[-1, 4], 1, BiFPN_Add2, [256, 256]]",
    ));
    assert!(
        e.contains("layer 12 (BiFPN_Add2)") && e.contains("equal channels"),
        "{e}"
    );
    let e = build_err(&bi.replace(
        "[[-1, 6], 1, BiFPN_Add2, [256, 256]]",
        "[[-1, 6], 1, BiFPN_Add2, [256, 384]]",
    ));
    assert!(
        e.contains("layer 12 (BiFPN_Add2)") && e.contains("384"),
        "{e}"
    );

    // An odd feature map reaches space_to_depth at run time: an error, not a panic.
    let spd = MIXED.replace("[-1, 1, Conv, [64, 3, 2]],", "[-1, 1, Conv, [64, 3, 1]],");
    let err = Model::new(ModelConfig::from_yaml(&spd).unwrap(), 0);
    assert!(err.is_ok(), "256×256 stays even");
    let model = err.unwrap();
    let x = Tensor::zeros(&[1, 3, 66, 66], Device::Cpu).unwrap();
    let e = model.forward(&x, false).unwrap_err().to_string();
    assert!(
        e.contains("space_to_depth") || e.contains("space-to-depth"),
        "{e}"
    );
}
