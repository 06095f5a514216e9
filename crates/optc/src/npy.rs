//! `.npy` reading and writing (NumPy format versions 1–3, C order, little-endian).

use optc_ir::{DType, Data, Tensor};

fn descr(d: DType) -> &'static str {
    match d {
        DType::F32 => "<f4",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::F64 => "<f8",
    }
}

/// Encode a tensor as `.npy` bytes (format 1.0).
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape().len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape()[0]),
        _ => format!(
            "({})",
            t.shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        descr(t.dtype()),
        shape
    );
    // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.data().to_le_bytes());
    out
}

fn field<'a>(header: &'a str, key: &str) -> Result<&'a str, String> {
    let k = format!("'{key}'");
    let i = header
        .find(&k)
        .ok_or_else(|| format!("header has no {k}"))?;
    let rest = header[i + k.len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| format!("malformed {k} in header"))?
        .trim_start();
    Ok(rest)
}

/// Decode `.npy` bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    let d = field(header, "descr")?;
    let d = d
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or("malformed descr")?;
    let dtype = match d {
        "<f4" | "=f4" => DType::F32,
        "<i8" | "=i8" => DType::I64,
        "<i4" | "=i4" => DType::I32,
        "|b1" => DType::Bool,
        "|u1" => DType::U8,
        "|i1" => DType::I8,
        "<f8" | "=f8" => DType::F64,
        other => {
            return Err(format!(
                "unsupported .npy dtype '{other}' (supported: <f4, <f8, <i8, <i4, |b1, |u1, |i1)"
            ))
        }
    };
    if field(header, "fortran_order")?.starts_with("True") {
        return Err("Fortran-order .npy files are not supported; save with C order".into());
    }
    let s = field(header, "shape")?;
    let s = s
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("malformed shape")?;
    let mut shape = vec![];
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(
            p.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("bad dimension '{p}' in shape"))?,
        );
    }
    let n = optc_ir::checked_numel(&shape).map_err(|e| e.to_string())?;
    let need = n.checked_mul(dtype.size()).ok_or("shape too large")?;
    let body = &bytes[end..];
    if body.len() != need {
        return Err(format!(
            "shape {:?} of {} needs {} data bytes, the file has {}",
            shape,
            dtype,
            need,
            body.len()
        ));
    }
    let data = Data::from_le_bytes(dtype, body).map_err(|e| e.to_string())?;
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

pub fn read(path: &std::path::Path) -> Result<Tensor, String> {
    let b = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    from_bytes(&b).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn write(path: &std::path::Path, t: &Tensor) -> Result<(), String> {
    std::fs::write(path, to_bytes(t)).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_dtype_and_rank() {
        for d in DType::ALL {
            for shape in [vec![], vec![3], vec![2, 3], vec![1, 0, 4]] {
                let n: usize = shape.iter().product();
                let t = Tensor::new(
                    shape.clone(),
                    Data::from_le_bytes(
                        d,
                        &(0..n * d.size()).map(|i| (i % 2) as u8).collect::<Vec<_>>(),
                    )
                    .unwrap(),
                )
                .unwrap();
                let b = to_bytes(&t);
                assert_eq!((b.len() - t.numel() * d.size()) % 64, 0);
                assert_eq!(from_bytes(&b).unwrap(), t);
            }
        }
    }

    #[test]
    fn reads_numpy_written_header() {
        // Header exactly as numpy 1.x writes it for np.zeros((2,3), np.float32).
        let mut b =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
                .to_vec();
        while b.len() < 127 {
            b.push(b' ');
        }
        b.push(b'\n');
        b.extend(std::iter::repeat_n(0u8, 24));
        let t = from_bytes(&b).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(from_bytes(b"hello").is_err());
        let t = Tensor::from_f32(vec![4], vec![1.0; 4]).unwrap();
        let b = to_bytes(&t);
        for cut in [5, 9, 20, b.len() - 1] {
            assert!(from_bytes(&b[..cut]).is_err(), "cut at {cut}");
        }
    }
}
