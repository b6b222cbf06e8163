//! The collection types held in values: hashes, sets, sorted sets (lists are a `VecDeque`).
//!
//! Each has a small form and a large form, mirroring Redis's encodings so that
//! `OBJECT ENCODING` and iteration order of small collections match Redis 7.0 (small hashes
//! keep insertion order like a listpack; small all-integer sets stay sorted like an intset).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use hashbrown::{HashMap, HashSet};

use super::blob::Blob;
use redoubt_protocol::num::parse_i64;

/// `hash-max-listpack-entries` / `hash-max-listpack-value` defaults.
pub const HASH_MAX_LISTPACK_ENTRIES: usize = 128;
pub const HASH_MAX_LISTPACK_VALUE: usize = 64;
/// `set-max-intset-entries` default.
pub const SET_MAX_INTSET_ENTRIES: usize = 512;
/// `zset-max-listpack-entries` / `zset-max-listpack-value` defaults.
pub const ZSET_MAX_LISTPACK_ENTRIES: usize = 128;
pub const ZSET_MAX_LISTPACK_VALUE: usize = 64;

// ---------------------------------------------------------------------------------------
// Hash
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Hash {
    /// Insertion-ordered pairs (Redis: listpack).
    Small(Vec<(Blob, Blob)>),
    Big(HashMap<Blob, Blob>),
}

impl Default for Hash {
    fn default() -> Self {
        Hash::Small(Vec::new())
    }
}

impl Hash {
    pub fn len(&self) -> usize {
        match self {
            Hash::Small(v) => v.len(),
            Hash::Big(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, f: &[u8]) -> Option<&Blob> {
        match self {
            Hash::Small(v) => v.iter().find(|(k, _)| k.as_slice() == f).map(|(_, v)| v),
            Hash::Big(m) => m.get(f),
        }
    }

    /// Sets a field; returns true if the field is new.
    pub fn set(&mut self, f: &[u8], val: &[u8]) -> bool {
        self.set_limited(f, val, HASH_MAX_LISTPACK_ENTRIES, HASH_MAX_LISTPACK_VALUE)
    }

    /// Like [`Hash::set`], with the listpack limits (`hash-max-listpack-entries`/`-value`)
    /// given: past them the hash becomes a hash table, for good.
    pub fn set_limited(&mut self, f: &[u8], val: &[u8], max_entries: usize, max_value: usize) -> bool {
        if let Hash::Small(v) = self {
            let new = match v.iter_mut().find(|(k, _)| k.as_slice() == f) {
                Some(p) => {
                    p.1 = Blob::new(val);
                    false
                }
                None => {
                    v.push((Blob::new(f), Blob::new(val)));
                    true
                }
            };
            if v.len() > max_entries || f.len().max(val.len()) > max_value {
                let m: HashMap<Blob, Blob> = std::mem::take(v).into_iter().collect();
                *self = Hash::Big(m);
            }
            return new;
        }
        match self {
            Hash::Big(m) => m.insert(Blob::new(f), Blob::new(val)).is_none(),
            Hash::Small(_) => unreachable!(),
        }
    }

    pub fn remove(&mut self, f: &[u8]) -> bool {
        match self {
            Hash::Small(v) => match v.iter().position(|(k, _)| k.as_slice() == f) {
                Some(i) => {
                    v.remove(i);
                    true
                }
                None => false,
            },
            Hash::Big(m) => m.remove(f).is_some(),
        }
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = (&Blob, &Blob)> + '_> {
        match self {
            Hash::Small(v) => Box::new(v.iter().map(|(k, v)| (k, v))),
            Hash::Big(m) => Box::new(m.iter()),
        }
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            Hash::Small(_) => "listpack",
            Hash::Big(_) => "hashtable",
        }
    }

    pub fn heap_size(&self) -> usize {
        let items: usize = self.iter().map(|(k, v)| k.heap_size() + v.heap_size()).sum();
        match self {
            Hash::Small(v) => v.capacity() * 48 + items,
            Hash::Big(m) => m.capacity() * 49 + items,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Set
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Set {
    /// Sorted integers (Redis: intset).
    Ints(Vec<i64>),
    Big(HashSet<Blob>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Ints(Vec::new())
    }
}

impl Set {
    pub fn len(&self) -> usize {
        match self {
            Set::Ints(v) => v.len(),
            Set::Big(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, m: &[u8]) -> bool {
        match self {
            Set::Ints(v) => parse_i64(m).is_some_and(|i| v.binary_search(&i).is_ok()),
            Set::Big(s) => s.contains(m),
        }
    }

    /// Adds a member; returns true if it was not there.
    pub fn insert(&mut self, m: &[u8]) -> bool {
        if let Set::Ints(v) = self {
            if let Some(i) = parse_i64(m) {
                return match v.binary_search(&i) {
                    Ok(_) => false,
                    Err(pos) => {
                        v.insert(pos, i);
                        if v.len() > SET_MAX_INTSET_ENTRIES {
                            self.to_big();
                        }
                        true
                    }
                };
            }
            self.to_big();
        }
        match self {
            Set::Big(s) => s.insert(Blob::new(m)),
            Set::Ints(_) => unreachable!(),
        }
    }

    fn to_big(&mut self) {
        if let Set::Ints(v) = self {
            let s: HashSet<Blob> = v.iter().map(|&i| Blob::from_i64(i)).collect();
            *self = Set::Big(s);
        }
    }

    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self {
            Set::Ints(v) => match parse_i64(m).map(|i| v.binary_search(&i)) {
                Some(Ok(pos)) => {
                    v.remove(pos);
                    true
                }
                _ => false,
            },
            Set::Big(s) => s.remove(m),
        }
    }

    /// Members in iteration order (sorted for intsets).
    pub fn members(&self) -> Vec<Blob> {
        match self {
            Set::Ints(v) => v.iter().map(|&i| Blob::from_i64(i)).collect(),
            Set::Big(s) => s.iter().cloned().collect(),
        }
    }

    pub fn for_each(&self, mut f: impl FnMut(&[u8])) {
        match self {
            Set::Ints(v) => {
                let mut b = itoa::Buffer::new();
                for &i in v {
                    f(b.format(i).as_bytes());
                }
            }
            Set::Big(s) => s.iter().for_each(|m| f(m)),
        }
    }

    /// The member at position `i` in iteration order, for random picks. O(1) for intsets;
    /// O(n) walk for hash sets, so callers sample via [`Set::random`].
    pub fn random(&self, rng: &mut impl rand::Rng) -> Option<Blob> {
        match self {
            Set::Ints(v) if !v.is_empty() => Some(Blob::from_i64(v[rng.gen_range(0..v.len())])),
            Set::Big(s) if !s.is_empty() => {
                let i = rng.gen_range(0..s.len());
                s.iter().nth(i).cloned()
            }
            _ => None,
        }
    }

    pub fn encoding(&self) -> &'static str {
        match self {
            Set::Ints(_) => "intset",
            Set::Big(_) => "hashtable",
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Set::Ints(v) => v.capacity() * 8,
            Set::Big(s) => s.capacity() * 25 + s.iter().map(|m| m.heap_size()).sum::<usize>(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sorted set
// ---------------------------------------------------------------------------------------

/// A score with a total order (scores are never NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Score {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.partial_cmp(&o.0).unwrap_or(Ordering::Equal)
    }
}

/// Sorted set: member -> score map plus a (score, member) ordered index.
#[derive(Clone, Debug, Default)]
pub struct ZSet {
    pub dict: HashMap<Blob, f64>,
    pub tree: BTreeSet<(Score, Blob)>,
    /// True once the set outgrew the listpack limits (Redis never converts back).
    pub big: bool,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.dict.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dict.is_empty()
    }

    pub fn score(&self, m: &[u8]) -> Option<f64> {
        self.dict.get(m).copied()
    }

    /// Inserts or updates; returns the previous score.
    pub fn insert(&mut self, m: &[u8], score: f64) -> Option<f64> {
        self.insert_limited(m, score, ZSET_MAX_LISTPACK_ENTRIES, ZSET_MAX_LISTPACK_VALUE)
    }

    /// Like [`ZSet::insert`], with the listpack limits (`zset-max-listpack-entries`/
    /// `-value`) given: past them the set is a skiplist, for good.
    ///
    /// While small, a score of -0 is stored as 0, as Redis 7.0's listpack does (it
    /// prints scores with `d2string`, which turns -0.0 into "0").
    pub fn insert_limited(&mut self, m: &[u8], mut score: f64, max_entries: usize, max_value: usize) -> Option<f64> {
        let old = self.dict.get(m).copied();
        if old.is_none() && (self.dict.len() + 1 > max_entries || m.len() > max_value) {
            self.big = true;
        }
        if !self.big && score == 0.0 {
            score = 0.0;
        }
        match old {
            Some(o) => {
                if o != score {
                    let key = self.tree.take(&(Score(o), Blob::new(m))).expect("indexed");
                    self.tree.insert((Score(score), key.1));
                    *self.dict.get_mut(m).expect("present") = score;
                }
            }
            None => {
                let b = Blob::new(m);
                self.dict.insert(b.clone(), score);
                self.tree.insert((Score(score), b));
            }
        }
        old
    }

    pub fn remove(&mut self, m: &[u8]) -> Option<f64> {
        let (k, s) = self.dict.remove_entry(m)?;
        self.tree.remove(&(Score(s), k));
        Some(s)
    }

    /// Removes and returns the lowest (or with `max`, highest) member and its score.
    pub fn pop(&mut self, max: bool) -> Option<(Blob, f64)> {
        let (s, m) = if max { self.tree.pop_last()? } else { self.tree.pop_first()? };
        self.dict.remove(&m);
        Some((m, s.0))
    }

    /// 0-based rank in ascending order. O(rank).
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        let s = self.score(m)?;
        let key = (Score(s), Blob::new(m));
        Some(self.tree.range(..&key).count())
    }

    pub fn encoding(&self) -> &'static str {
        if self.big {
            "skiplist"
        } else {
            "listpack"
        }
    }

    pub fn heap_size(&self) -> usize {
        self.dict.capacity() * 33 + self.len() * 64 + self.dict.keys().map(|m| 2 * m.heap_size()).sum::<usize>()
    }
}
