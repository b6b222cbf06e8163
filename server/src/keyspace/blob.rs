//! `Blob`: the byte string stored for keys, string values and collection members.
//!
//! Most keys and values in the workloads we serve (DLR ids, counters, session tokens) are
//! short, so strings of up to 22 bytes live inline in the 24-byte value with no heap
//! allocation at all. Longer strings are one exact-size heap allocation; strings that are
//! grown in place (APPEND, SETRANGE, SETBIT) switch to a growable buffer, which is also what
//! Redis reports as the `raw` encoding.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

const INLINE: usize = 22;

#[derive(Clone)]
pub enum Blob {
    Inline {
        len: u8,
        buf: [u8; INLINE],
    },
    Heap(Box<[u8]>),
    /// Grown in place; amortised appends.
    Buf(Box<Vec<u8>>),
}

impl Blob {
    pub fn new(s: &[u8]) -> Blob {
        if s.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..s.len()].copy_from_slice(s);
            Blob::Inline { len: s.len() as u8, buf }
        } else {
            Blob::Heap(s.into())
        }
    }

    pub fn from_vec(v: Vec<u8>) -> Blob {
        if v.len() <= INLINE {
            Blob::new(&v)
        } else {
            Blob::Heap(v.into_boxed_slice())
        }
    }

    /// A string that must not be reported as an integer encoding even if it looks like one
    /// (Redis keeps INCRBYFLOAT results as `embstr`): always the heap form.
    pub fn not_int(s: &[u8]) -> Blob {
        Blob::Heap(s.into())
    }

    pub fn from_i64(n: i64) -> Blob {
        let mut b = itoa::Buffer::new();
        Blob::new(b.format(n).as_bytes())
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Blob::Inline { len, buf } => &buf[..*len as usize],
            Blob::Heap(b) => b,
            Blob::Buf(v) => v,
        }
    }

    /// A growable buffer for in-place edits; converts this blob to the `raw` form.
    pub fn make_mut(&mut self) -> &mut Vec<u8> {
        if !matches!(self, Blob::Buf(_)) {
            *self = Blob::Buf(Box::new(self.as_slice().to_vec()));
        }
        match self {
            Blob::Buf(v) => v,
            _ => unreachable!(),
        }
    }

    pub fn is_raw(&self) -> bool {
        matches!(self, Blob::Buf(_))
    }

    /// True for the heap form. Strings written by SET that fit inline are inline, so a
    /// short heap string was stored deliberately as a non-integer (see [`Blob::not_int`]).
    pub fn is_heap(&self) -> bool {
        matches!(self, Blob::Heap(_))
    }

    /// Heap bytes owned beyond the inline part (for MEMORY USAGE and INFO memory).
    pub fn heap_size(&self) -> usize {
        match self {
            Blob::Inline { .. } => 0,
            Blob::Heap(b) => malloc_size(b.len()),
            Blob::Buf(v) => 24 + malloc_size(v.capacity()),
        }
    }
}

/// What the allocator really hands out for a request of `n` bytes (glibc: 16-byte
/// granularity with an 8-byte header, 32 bytes minimum).
pub fn malloc_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Blob {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Blob {
    fn eq(&self, o: &Blob) -> bool {
        self.as_slice() == o.as_slice()
    }
}
impl Eq for Blob {}

impl PartialOrd for Blob {
    fn partial_cmp(&self, o: &Blob) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Blob {
    fn cmp(&self, o: &Blob) -> std::cmp::Ordering {
        self.as_slice().cmp(o.as_slice())
    }
}

impl Hash for Blob {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // Must hash exactly like `[u8]` so maps can be queried with borrowed slices.
        self.as_slice().hash(h)
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_slice()))
    }
}

impl From<&[u8]> for Blob {
    fn from(s: &[u8]) -> Blob {
        Blob::new(s)
    }
}

impl From<&str> for Blob {
    fn from(s: &str) -> Blob {
        Blob::new(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_compact() {
        assert_eq!(std::mem::size_of::<Blob>(), 24);
        let b = Blob::new(b"0123456789012345678901");
        assert!(matches!(b, Blob::Inline { .. }));
        let b = Blob::new(b"01234567890123456789012");
        assert!(matches!(b, Blob::Heap(_)));
        let mut b = Blob::new(b"ab");
        b.make_mut().extend_from_slice(b"cd");
        assert_eq!(&*b, b"abcd");
    }
}
