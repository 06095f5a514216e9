//! The workspace arena of the memory plan: offsets in one block, reused by liveness.

/// A best-fit free-list allocator over a growing arena; every block is 64-byte aligned.
#[derive(Default)]
pub(crate) struct Arena {
    free: Vec<(usize, usize)>,
    pub(crate) top: usize,
}

pub(crate) fn align64(n: usize) -> Option<usize> {
    n.checked_add(63).map(|v| v & !63)
}

impl Arena {
    /// Allocate `size` bytes (rounded up to 64); `None` on overflow.
    pub(crate) fn alloc(&mut self, size: usize) -> Option<usize> {
        let size = align64(size.max(1))?;
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.1 >= size)
            .min_by_key(|(_, b)| b.1)
            .map(|(i, _)| i);
        if let Some(i) = best {
            let (off, len) = self.free[i];
            if len == size {
                self.free.remove(i);
            } else {
                self.free[i] = (off + size, len - size);
            }
            return Some(off);
        }
        // Grow: extend a free block that ends at the top, if any.
        if let Some(i) = self.free.iter().position(|b| b.0 + b.1 == self.top) {
            let (off, len) = self.free.remove(i);
            self.top = off.checked_add(size)?;
            let _ = len;
            return Some(off);
        }
        let off = self.top;
        self.top = self.top.checked_add(size)?;
        Some(off)
    }

    pub(crate) fn free(&mut self, off: usize, size: usize) {
        let size = match align64(size.max(1)) {
            Some(s) => s,
            None => return,
        };
        self.free.push((off, size));
        self.free.sort();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.free.len());
        for &(o, l) in &self.free {
            if let Some(last) = merged.last_mut() {
                if last.0 + last.1 == o {
                    last.1 += l;
                    continue;
                }
            }
            merged.push((o, l));
        }
        self.free = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_freed_blocks() {
        let mut a = Arena::default();
        let x = a.alloc(100).unwrap();
        let y = a.alloc(100).unwrap();
        a.free(x, 100);
        let z = a.alloc(64).unwrap();
        assert_eq!(z, x);
        assert_eq!(a.top, 256);
        a.free(y, 100);
        a.free(z, 64);
        let w = a.alloc(256).unwrap();
        assert_eq!(w, 0);
        assert_eq!(a.top, 256);
        assert_eq!(x % 64, 0);
    }
}
