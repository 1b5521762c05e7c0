//! Augmentation hyper-parameters, read from an upstream hyp YAML.

use std::path::Path;

use serde::Deserialize;

use crate::error::{io_err, DataError, Result};

/// The augmentation part of a hyp YAML. Unknown keys (lr0, box, …) are ignored; missing keys take
/// the values of upstream `hyp.scratch-low.yaml`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default)]
pub struct AugParams {
    /// Hue gain (fraction).
    pub hsv_h: f32,
    /// Saturation gain (fraction).
    pub hsv_s: f32,
    /// Value gain (fraction).
    pub hsv_v: f32,
    /// Rotation range (± degrees).
    pub degrees: f32,
    /// Translation range (± fraction of the image size).
    pub translate: f32,
    /// Scale range (± gain).
    pub scale: f32,
    /// Shear range (± degrees).
    pub shear: f32,
    /// Perspective range (± fraction, 0–0.001).
    pub perspective: f32,
    /// Up-down flip probability.
    pub flipud: f32,
    /// Left-right flip probability.
    pub fliplr: f32,
    /// Mosaic probability.
    pub mosaic: f32,
    /// MixUp probability.
    pub mixup: f32,
    /// Our addition: probability that a mosaic uses 9 images instead of 4 (upstream: 0).
    pub mosaic9: f32,
}

impl Default for AugParams {
    fn default() -> Self {
        AugParams {
            hsv_h: 0.015,
            hsv_s: 0.7,
            hsv_v: 0.4,
            degrees: 0.0,
            translate: 0.1,
            scale: 0.5,
            shear: 0.0,
            perspective: 0.0,
            flipud: 0.0,
            fliplr: 0.5,
            mosaic: 1.0,
            mixup: 0.0,
            mosaic9: 0.0,
        }
    }
}

impl AugParams {
    /// Reads the augmentation keys of a hyp YAML file.
    pub fn load(path: impl AsRef<Path>) -> Result<AugParams> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses hyp YAML text; `file` names the source in errors.
    pub fn from_yaml_str(text: &str, file: &Path) -> Result<AugParams> {
        let p: AugParams = serde_yaml_ng::from_str(text).map_err(|source| DataError::Yaml {
            path: file.to_path_buf(),
            source,
        })?;
        p.validate().map_err(|detail| DataError::Config {
            path: file.to_path_buf(),
            detail,
        })?;
        Ok(p)
    }

    /// Every augmentation off (validation-style preprocessing with `augment = true` is then a
    /// plain letterbox).
    pub fn none() -> AugParams {
        AugParams {
            hsv_h: 0.0,
            hsv_s: 0.0,
            hsv_v: 0.0,
            degrees: 0.0,
            translate: 0.0,
            scale: 0.0,
            shear: 0.0,
            perspective: 0.0,
            flipud: 0.0,
            fliplr: 0.0,
            mosaic: 0.0,
            mixup: 0.0,
            mosaic9: 0.0,
        }
    }

    /// Checks ranges: gains finite and ≥ 0, probabilities in 0..=1, scale < 1.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let all = [
            ("hsv_h", self.hsv_h),
            ("hsv_s", self.hsv_s),
            ("hsv_v", self.hsv_v),
            ("degrees", self.degrees),
            ("translate", self.translate),
            ("scale", self.scale),
            ("shear", self.shear),
            ("perspective", self.perspective),
            ("flipud", self.flipud),
            ("fliplr", self.fliplr),
            ("mosaic", self.mosaic),
            ("mixup", self.mixup),
            ("mosaic9", self.mosaic9),
        ];
        for (k, v) in all {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("`{k}: {v}` must be a finite number ≥ 0"));
            }
        }
        for (k, v) in [
            ("flipud", self.flipud),
            ("fliplr", self.fliplr),
            ("mosaic", self.mosaic),
            ("mixup", self.mixup),
            ("mosaic9", self.mosaic9),
            ("translate", self.translate),
        ] {
            if v > 1.0 {
                return Err(format!(
                    "`{k}: {v}` is a probability/fraction and must be ≤ 1"
                ));
            }
        }
        if self.scale >= 1.0 {
            return Err(format!(
                "`scale: {}` must be < 1 (gain range 1 ± scale)",
                self.scale
            ));
        }
        Ok(())
    }
}
