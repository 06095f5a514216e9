//! What AOT compilation produces, and the model's symbol names.

use optc_ir::TensorType;

/// What to produce besides the object.
#[derive(Clone, Debug, Default)]
pub struct AotOptions {
    /// Model name used in symbols (`optc_<name>_run`); see [`symbol_name`].
    pub name: String,
    /// Keep the Cranelift IR text of every function ([`AotModel::clif`]).
    pub keep_clif: bool,
    /// Keep a disassembly of every function ([`AotModel::asm`]; x86-64 targets only).
    pub keep_asm: bool,
}

/// A named model input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct AotTensor {
    pub name: String,
    pub ty: TensorType,
}

impl AotTensor {
    pub fn numel(&self) -> usize {
        self.ty.shape.iter().product()
    }
    pub fn bytes(&self) -> usize {
        self.numel() * self.ty.dtype.size()
    }
}

/// A model compiled to an object file.
#[derive(Clone, Debug)]
pub struct AotModel {
    /// Symbol name of the model (`optc_<name>_run`).
    pub name: String,
    /// Target name (`x86_64-avx2`, `aarch64-neon`, ...).
    pub target: String,
    /// Target triple of the object.
    pub triple: String,
    /// The relocatable ELF object.
    pub object: Vec<u8>,
    pub inputs: Vec<AotTensor>,
    pub outputs: Vec<AotTensor>,
    /// Bytes of 64-byte aligned scratch memory `run` needs.
    pub workspace: usize,
    /// `(node name, op name)` of every kernel in schedule order (runtime error positions).
    pub nodes: Vec<(String, String)>,
    /// Cranelift IR of every function, when [`AotOptions::keep_clif`].
    pub clif: String,
    /// Disassembly of every function, when [`AotOptions::keep_asm`].
    pub asm: String,
    /// One object for every length of a range: where the length is (the last input is the
    /// run's length, an i64 scalar).
    pub length: Option<AotLength>,
}

/// The length range of an object compiled for every length in it: its buffers have the
/// longest length's shapes; a run of length `L` reads the first `L` positions along each
/// input's length axes and writes the first `L` along each output's (the rest of such an
/// output is unspecified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AotLength {
    pub min: usize,
    pub max: usize,
    /// The longest length of each variant the object holds, shortest first (a run takes
    /// the first at least its length).
    pub variants: Vec<usize>,
    /// Per input (the length input excluded): its length axes.
    pub inputs: Vec<Vec<usize>>,
    /// Per output: its length axes (none: written in full).
    pub outputs: Vec<Vec<usize>>,
    /// Whether every length axis is led by extents of 1 (a run's positions are the first
    /// elements of each buffer).
    pub leading: bool,
}

impl AotModel {
    /// `optc_<name>_run`.
    pub fn run_symbol(&self) -> String {
        format!("optc_{}_run", self.name)
    }
    /// `optc_<name>_workspace_size`.
    pub fn workspace_symbol(&self) -> String {
        format!("optc_{}_workspace_size", self.name)
    }
    /// `optc_<name>_set_parallel_for`.
    pub fn set_parallel_for_symbol(&self) -> String {
        format!("optc_{}_set_parallel_for", self.name)
    }
    /// Every global symbol the object defines.
    pub fn exported_symbols(&self) -> Vec<String> {
        vec![
            self.run_symbol(),
            self.workspace_symbol(),
            self.set_parallel_for_symbol(),
        ]
    }
}

/// A C identifier from a model name: lower-case ASCII letters, digits and `_` (others become
/// `_`), never starting with a digit, never empty.
pub fn symbol_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'm');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_names_are_c_identifiers() {
        assert_eq!(symbol_name("Tiny-CNN.v2"), "tiny_cnn_v2");
        assert_eq!(symbol_name("18net"), "m18net");
        assert_eq!(symbol_name(""), "m");
    }
}
