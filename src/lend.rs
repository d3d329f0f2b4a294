//! Buffers a thread lends to its own per-frame work, so that a frame costs no
//! allocation: the buffer is taken out of its thread-local for the call (a
//! nested call with the same key would find an empty one and allocate, never
//! alias) and put back emptied, keeping its capacity, unless it grew past what
//! is worth keeping.

use std::cell::Cell;
use std::thread::LocalKey;

/// A buffer that can be emptied and kept for its capacity.
pub trait Reusable: Default {
    fn clear(&mut self);
    /// The bytes its capacity holds.
    fn capacity_bytes(&self) -> usize;
}

impl<T> Reusable for Vec<T> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
    fn capacity_bytes(&self) -> usize {
        self.capacity() * size_of::<T>()
    }
}

impl Reusable for bytes::BytesMut {
    fn clear(&mut self) {
        bytes::BytesMut::clear(self);
    }
    fn capacity_bytes(&self) -> usize {
        self.capacity()
    }
}

/// Runs `f` with the thread's buffer in `key` (empty), then empties it and
/// keeps it for the next call unless its capacity passed `keep` bytes.
pub fn lend<B: Reusable, R>(
    key: &'static LocalKey<Cell<B>>,
    keep: usize,
    f: impl FnOnce(&mut B) -> R,
) -> R {
    let mut buf = key.take();
    let r = f(&mut buf);
    if buf.capacity_bytes() <= keep {
        buf.clear();
        key.set(buf);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static BUF: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
    }

    #[test]
    fn a_lent_buffer_comes_back_empty_with_its_capacity_unless_it_grew_too_large() {
        let ptr = lend(&BUF, 1024, |b| {
            assert!(b.is_empty());
            b.extend([1, 2, 3]);
            b.as_ptr()
        });
        // The same block again, emptied.
        lend(&BUF, 1024, |b| {
            assert!(b.is_empty());
            assert_eq!(b.as_ptr(), ptr);
            // A nested loan of the same key gets a buffer of its own.
            lend(&BUF, 1024, |inner| assert_eq!(inner.capacity(), 0));
            b.reserve(1000);
        });
        // 1,000 u64 are past 1,024 bytes: not kept.
        lend(&BUF, 1024, |b| assert_eq!(b.capacity(), 0));
    }
}
