//! Dataset YAML as upstream (`path`, `train`, `val`, `test`, `names`, optional `nc`).

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::error::{io_err, DataError, Result};

/// A parsed dataset YAML with every source path resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetConfig {
    /// The YAML file this came from.
    pub file: PathBuf,
    /// Dataset root: `path:` resolved against the YAML's folder (or the working directory).
    pub root: PathBuf,
    /// Training sources: folders, `.txt` lists of image paths, or images.
    pub train: Vec<PathBuf>,
    /// Validation sources.
    pub val: Vec<PathBuf>,
    /// Test sources (often empty).
    pub test: Vec<PathBuf>,
    /// Class names, index = class id.
    pub names: Vec<String>,
}

impl DatasetConfig {
    /// Reads and resolves a dataset YAML file.
    pub fn load(path: impl AsRef<Path>) -> Result<DatasetConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Self::from_yaml_str(&text, path)
    }

    /// Parses dataset YAML text; `file` is used for error messages and to resolve relative paths.
    pub fn from_yaml_str(text: &str, file: &Path) -> Result<DatasetConfig> {
        let cfg_err = |detail: String| DataError::Config {
            path: file.to_path_buf(),
            detail,
        };
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|source| DataError::Yaml {
            path: file.to_path_buf(),
            source,
        })?;
        let Value::Mapping(map) = &doc else {
            return Err(cfg_err(
                "expected a mapping with keys path, train, val, names".into(),
            ));
        };
        let get = |k: &str| map.get(Value::String(k.into()));

        let yaml_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let yaml_dir = if yaml_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            yaml_dir
        };
        let root = match get("path") {
            None | Some(Value::Null) => yaml_dir.clone(),
            Some(Value::String(p)) => resolve_root(&yaml_dir, Path::new(p)),
            Some(other) => {
                return Err(cfg_err(format!(
                    "`path` must be a string, found {}",
                    kind(other)
                )))
            }
        };

        let sources = |key: &str, required: bool| -> Result<Vec<PathBuf>> {
            match get(key) {
                None | Some(Value::Null) if !required => Ok(Vec::new()),
                None | Some(Value::Null) => Err(cfg_err(format!("missing required key `{key}`"))),
                Some(Value::String(s)) => Ok(vec![resolve_source(&root, s)]),
                Some(Value::Sequence(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(resolve_source(&root, s)),
                        other => Err(cfg_err(format!(
                            "`{key}` entries must be strings, found {}",
                            kind(other)
                        ))),
                    })
                    .collect(),
                Some(other) => Err(cfg_err(format!(
                    "`{key}` must be a path or a list of paths, found {}",
                    kind(other)
                ))),
            }
        };
        let train = sources("train", true)?;
        let val = sources("val", true)?;
        let test = sources("test", false)?;

        let nc = match get("nc") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) => Some(n as usize),
                None => {
                    return Err(cfg_err(format!(
                        "`nc` must be a non-negative integer, found {n}"
                    )))
                }
            },
            Some(other) => {
                return Err(cfg_err(format!(
                    "`nc` must be an integer, found {}",
                    kind(other)
                )))
            }
        };
        let names = match get("names") {
            None | Some(Value::Null) => match nc {
                Some(n) => (0..n).map(|i| format!("class{i}")).collect(),
                None => return Err(cfg_err("missing required key `names`".into())),
            },
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    scalar_string(v).ok_or_else(|| {
                        cfg_err(format!("names[{i}] must be a string, found {}", kind(v)))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            Some(Value::Mapping(m)) => {
                let mut pairs = Vec::with_capacity(m.len());
                for (k, v) in m {
                    let id = match k {
                        Value::Number(n) => n.as_u64(),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        cfg_err(format!(
                            "`names` keys must be integer class ids (e.g. `0: person`), found {}",
                            scalar_string(k).unwrap_or_else(|| kind(k).into())
                        ))
                    })?;
                    let name = scalar_string(v).ok_or_else(|| {
                        cfg_err(format!("names[{id}] must be a string, found {}", kind(v)))
                    })?;
                    pairs.push((id as usize, name));
                }
                pairs.sort_by_key(|p| p.0);
                for (expect, (id, _)) in pairs.iter().enumerate() {
                    if *id != expect {
                        return Err(cfg_err(format!(
                            "`names` ids must be 0..{} without gaps; id {expect} is missing",
                            pairs.len()
                        )));
                    }
                }
                pairs.into_iter().map(|p| p.1).collect()
            }
            Some(other) => {
                return Err(cfg_err(format!(
                    "`names` must be a list or a mapping of id: name, found {}",
                    kind(other)
                )))
            }
        };
        if let Some(nc) = nc {
            if nc != names.len() {
                return Err(cfg_err(format!(
                    "`nc: {nc}` disagrees with the {} class names given",
                    names.len()
                )));
            }
        }
        if names.is_empty() {
            return Err(cfg_err(
                "`names` is empty: a dataset needs at least one class".into(),
            ));
        }
        Ok(DatasetConfig {
            file: file.to_path_buf(),
            root,
            train,
            val,
            test,
            names,
        })
    }

    /// Number of classes.
    pub fn nc(&self) -> usize {
        self.names.len()
    }
}

/// `path:` relative to the YAML's folder if that exists, else to the working directory
/// (upstream resolves it against its repository root), else the YAML-relative path.
fn resolve_root(yaml_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let by_yaml = yaml_dir.join(p);
    if by_yaml.exists() || !p.exists() {
        by_yaml
    } else {
        p.to_path_buf()
    }
}

/// A `train`/`val`/`test` entry: absolute, or relative to the dataset root. As upstream, a missing
/// `../x` is retried as `x` under the root.
fn resolve_source(root: &Path, s: &str) -> PathBuf {
    let p = Path::new(s);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let joined = root.join(p);
    if !joined.exists() {
        if let Some(rest) = s.strip_prefix("../") {
            let alt = root.join(rest);
            if alt.exists() {
                return alt;
            }
        }
    }
    joined
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
