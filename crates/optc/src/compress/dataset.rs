//! Sets of model inputs read from a directory: calibration (`--calibrate DIR`) and evaluation
//! (`--eval DIR`) data.
//!
//! A directory holds one or more *sets* (one tensor per model input each), in any of these
//! layouts, which may be mixed:
//! - `input_<i>.pb` (ONNX `TensorProto`, input `i` in model order): one set;
//! - `input_<i>_<k>.pb`: set `k` (several sets, e.g. one sentence each);
//! - `<input name>.npy`, `input_<i>.npy` or `input_<i>_<k>.npy`: the same with `.npy` files;
//! - `test_data_set_<k>/` subdirectories in the ONNX backend-test layout, one set each.
//!
//! Sets may differ in a dynamic dimension from each other and from the shape the model is
//! compiled for (a calibration batch of 256, a test batch of 360).

use crate::{Error, Result};
use optc_ir::{Tensor, TensorType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Input sets, each one tensor per model input in model order.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub sets: Vec<Vec<Tensor>>,
    /// Where they came from (directories, or "random inputs").
    pub source: String,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Elements over all sets (for progress and cost estimates).
    pub fn elements(&self) -> usize {
        self.sets.iter().flatten().map(|t| t.numel()).sum()
    }

    /// `n` sets of seeded random inputs of `types` (when no data is given: the task accuracy
    /// of a lossy compile is then unknown).
    pub fn random(types: &[TensorType], n: usize, seed: u64) -> Dataset {
        Dataset {
            sets: (0..n as u64)
                .map(|k| crate::random_inputs(types, seed.wrapping_add(k)))
                .collect(),
            source: format!("{n} set(s) of seeded random inputs"),
        }
    }

    /// Append another dataset's sets.
    pub fn extend(&mut self, other: Dataset) {
        self.sets.extend(other.sets);
        self.source = if self.source.is_empty() {
            other.source
        } else {
            format!("{} + {}", self.source, other.source)
        };
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

fn read_tensor(path: &Path) -> Result<Tensor> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => crate::npy::read(path).map_err(|e| io(path, e)),
        _ => {
            let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
            optc_onnx::tensor_from_pb(&bytes).map_err(|e| io(path, e))
        }
    }
}

/// Which input and set a file name stands for: `input_<i>[_<k>].{pb,npy}` or
/// `<input name>.npy`.
fn classify(file: &str, names: &[String]) -> Option<(usize, usize)> {
    let (stem, ext) = file.rsplit_once('.')?;
    if ext != "pb" && ext != "npy" {
        return None;
    }
    if let Some(rest) = stem.strip_prefix("input_") {
        let mut parts = rest.splitn(2, '_');
        let i = parts.next()?.parse().ok()?;
        let k = match parts.next() {
            Some(k) => k.parse().ok()?,
            None => 0,
        };
        return Some((i, k));
    }
    if ext == "npy" {
        return names.iter().position(|n| n == stem).map(|i| (i, 0));
    }
    None
}

/// Read the sets in `dir` for a model with inputs `names`.
pub fn load_dir(dir: &Path, names: &[String]) -> Result<Dataset> {
    let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
    let mut files: BTreeMap<(usize, usize), PathBuf> = BTreeMap::new();
    let mut subsets: Vec<PathBuf> = vec![];
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let file = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && file.starts_with("test_data_set_") {
            subsets.push(path);
        } else if let Some((i, k)) = classify(&file, names) {
            if files.insert((k, i), path.clone()).is_some() {
                return Err(io(&path, "two files give the same input of the same set"));
            }
        }
    }
    subsets.sort();
    let mut set_ids: Vec<usize> = files.keys().map(|(k, _)| *k).collect();
    set_ids.dedup();
    let mut out = Dataset {
        sets: vec![],
        source: dir.display().to_string(),
    };
    for k in set_ids {
        let mut set = vec![];
        for (i, name) in names.iter().enumerate() {
            let path = files.get(&(k, i)).ok_or_else(|| {
                io(
                    dir,
                    format!("set {k} has no file for input {i} ('{name}'): expected input_{i}_{k}.pb, input_{i}.pb or {name}.npy"),
                )
            })?;
            set.push(read_tensor(path)?);
        }
        if let Some(((_, i), p)) = files
            .iter()
            .find(|((kk, i), _)| *kk == k && *i >= names.len())
        {
            return Err(io(
                p,
                format!("the model has {} input(s), this is input {i}", names.len()),
            ));
        }
        out.sets.push(set);
    }
    for sub in subsets {
        let d = load_dir(&sub, names)?;
        out.sets.extend(d.sets);
    }
    if out.sets.is_empty() {
        return Err(io(
            dir,
            "no inputs found (expected input_<i>.pb, input_<i>_<k>.pb, .npy files or test_data_set_<k>/)",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_input_and_set() {
        let names = vec!["ids".to_string(), "mask".to_string()];
        assert_eq!(classify("input_0.pb", &names), Some((0, 0)));
        assert_eq!(classify("input_1_12.pb", &names), Some((1, 12)));
        assert_eq!(classify("input_1_3.npy", &names), Some((1, 3)));
        assert_eq!(classify("mask.npy", &names), Some((1, 0)));
        assert_eq!(classify("output_0.pb", &names), None);
        assert_eq!(classify("input_x.pb", &names), None);
        assert_eq!(classify("labels.npy", &names), None);
    }

    #[test]
    fn sets_from_every_layout() {
        let dir = std::env::temp_dir().join(format!("optc-dataset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("test_data_set_0")).unwrap();
        let t = |v: f32| Tensor::from_f32(vec![2], vec![v, v]).unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        let pb = |t: &Tensor| optc_onnx::tensor_to_pb(t, "x");
        std::fs::write(dir.join("input_0_0.pb"), pb(&t(1.0))).unwrap();
        std::fs::write(dir.join("input_1_0.pb"), pb(&t(2.0))).unwrap();
        crate::npy::write(&dir.join("input_0_1.npy"), &t(3.0)).unwrap();
        crate::npy::write(&dir.join("input_1_1.npy"), &t(4.0)).unwrap();
        std::fs::write(dir.join("test_data_set_0/input_0.pb"), pb(&t(5.0))).unwrap();
        crate::npy::write(&dir.join("test_data_set_0/b.npy"), &t(6.0)).unwrap();
        let d = load_dir(&dir, &names).unwrap();
        let firsts: Vec<Vec<f32>> = d
            .sets
            .iter()
            .map(|s| s.iter().map(|t| t.as_f32().unwrap()[0]).collect())
            .collect();
        assert_eq!(firsts, vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]);
        // a set missing an input is an error naming it
        std::fs::remove_file(dir.join("input_1_1.npy")).unwrap();
        let e = load_dir(&dir, &names).unwrap_err().to_string();
        assert!(e.contains("set 1") && e.contains("'b'"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
