//! `Table`: the main dictionary of one database.
//!
//! Entries live in a slab of fixed-size chunks and never move once placed; a
//! `hashbrown::HashTable<u32>` maps key hashes to slab slots. This gives us three things a
//! plain `HashMap` cannot:
//!
//! * **A SCAN cursor that survives rehashing.** The cursor is a slab position. Growing the
//!   hash index never moves an entry, so every key present for a whole SCAN is returned
//!   exactly once, as Redis guarantees (Redis gets the same from reverse-binary bucket
//!   iteration).
//! * **Cheap random sampling** for RANDOMKEY and eviction: pick a slot, retry on a hole.
//! * **Memory close to the data**: 4-5 bytes of index per key plus the 64-byte entry, with
//!   no doubling slack on the entries (chunks are allocated one at a time).
//!
//! Freed slots go on a free list and are reused by later inserts.

use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry as HEntry, HashTable};
use hashbrown::DefaultHashBuilder;

use super::{Entry, Value};
use crate::keyspace::blob::Blob;

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

pub struct Table {
    index: HashTable<u32>,
    chunks: Vec<Vec<Option<Entry>>>,
    free: Vec<u32>,
    len: usize,
    hasher: DefaultHashBuilder,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            index: HashTable::new(),
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl Table {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of slab slots (live or free); SCAN cursors range over `0..slots()`.
    pub fn slots(&self) -> usize {
        match self.chunks.last() {
            None => 0,
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.len(),
        }
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub fn slot(&self, i: u32) -> Option<&Entry> {
        let i = i as usize;
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))?.as_ref()
    }

    #[inline]
    pub fn slot_mut(&mut self, i: u32) -> Option<&mut Entry> {
        let i = i as usize;
        self.chunks.get_mut(i >> CHUNK_BITS)?.get_mut(i & (CHUNK - 1))?.as_mut()
    }

    #[inline]
    fn slot_ref(chunks: &[Vec<Option<Entry>>], i: u32) -> &Entry {
        let i = i as usize;
        chunks[i >> CHUNK_BITS][i & (CHUNK - 1)].as_ref().expect("indexed slot is live")
    }

    /// Slot of `key`, if present.
    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let h = self.hash(key);
        let chunks = &self.chunks;
        self.index.find(h, |&i| Self::slot_ref(chunks, i).key.as_slice() == key).copied()
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.find(key).and_then(|i| self.slot(i))
    }

    fn alloc_slot(&mut self, e: Entry) -> u32 {
        if let Some(i) = self.free.pop() {
            let i_us = i as usize;
            self.chunks[i_us >> CHUNK_BITS][i_us & (CHUNK - 1)] = Some(e);
            return i;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            // The first chunk starts small so that an empty database costs little.
            let cap = if self.chunks.is_empty() { 16 } else { CHUNK };
            self.chunks.push(Vec::with_capacity(cap));
        }
        let n = self.chunks.len();
        let last = &mut self.chunks[n - 1];
        if last.len() == last.capacity() {
            let extra = last.capacity().min(CHUNK - last.capacity());
            last.reserve_exact(extra);
        }
        last.push(Some(e));
        ((n - 1) * CHUNK + last.len() - 1) as u32
    }

    /// Inserts a new key, which must not be present. Returns its slot.
    pub fn insert_new(&mut self, key: Blob, value: Value) -> u32 {
        let h = self.hash(&key);
        let slot = self.alloc_slot(Entry::new(key, value));
        let chunks = &self.chunks;
        let hasher = &self.hasher;
        self.index.insert_unique(h, slot, |&i| hasher.hash_one(Self::slot_ref(chunks, i).key.as_slice()));
        self.len += 1;
        slot
    }

    /// Removes the entry at `slot` and returns it.
    pub fn remove_slot(&mut self, slot: u32) -> Entry {
        let h = {
            let e = self.slot(slot).expect("live slot");
            self.hash(&e.key)
        };
        match self.index.find_entry(h, |&i| i == slot) {
            Ok(occ) => {
                occ.remove();
            }
            Err(_) => unreachable!("slot {slot} missing from index"),
        }
        let i = slot as usize;
        let e = self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)].take().expect("live slot");
        self.free.push(slot);
        self.len -= 1;
        if self.len == 0 {
            // An emptied table gives all its memory back.
            *self = Table { hasher: std::mem::take(&mut self.hasher), ..Table::default() };
        }
        e
    }

    /// Looks `key` up, inserting the result of `make` if absent. Returns (slot, inserted).
    pub fn find_or_insert(&mut self, key: &[u8], make: impl FnOnce() -> Value) -> (u32, bool) {
        let h = self.hash(key);
        {
            let chunks = &self.chunks;
            let hasher = &self.hasher;
            if let HEntry::Occupied(o) = self.index.entry(
                h,
                |&i| Self::slot_ref(chunks, i).key.as_slice() == key,
                |&i| hasher.hash_one(Self::slot_ref(chunks, i).key.as_slice()),
            ) {
                return (*o.get(), false);
            }
        }
        (self.insert_new(Blob::new(key), make()), true)
    }

    /// Iterates live entries in slot order starting at `cursor`, visiting at most `budget`
    /// slots. Returns the next cursor (0 when the end was reached).
    pub fn scan(&self, cursor: usize, budget: usize, mut f: impl FnMut(u32, &Entry)) -> usize {
        let end = self.slots();
        let mut i = cursor;
        let mut visited = 0;
        while i < end && visited < budget {
            if let Some(e) = self.slot(i as u32) {
                f(i as u32, e);
            }
            i += 1;
            visited += 1;
        }
        if i >= end {
            0
        } else {
            i
        }
    }

    /// A uniformly random live slot, or None if empty. Tries random slots, falling back to
    /// a linear probe when the slab is mostly holes.
    pub fn random_slot(&self, rng: &mut impl rand::Rng) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let n = self.slots();
        for _ in 0..64 {
            let i = rng.gen_range(0..n) as u32;
            if self.slot(i).is_some() {
                return Some(i);
            }
        }
        let start = rng.gen_range(0..n);
        (0..n).map(|k| ((start + k) % n) as u32).find(|&i| self.slot(i).is_some())
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Entry)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk.iter().enumerate().filter_map(move |(j, e)| e.as_ref().map(|e| ((c * CHUNK + j) as u32, e)))
        })
    }

    /// Bytes of freed slots waiting to be reused by the next inserts: memory that is
    /// allocated but holds no data (eviction counts it as available).
    pub fn reusable_bytes(&self) -> usize {
        self.free.len() * std::mem::size_of::<Option<Entry>>()
    }

    /// Bytes used by the index and slab themselves (not the values' heap data).
    pub fn overhead_bytes(&self) -> usize {
        self.index.capacity() * 5
            + self.chunks.iter().map(|c| c.capacity() * std::mem::size_of::<Option<Entry>>()).sum::<usize>()
            + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn v() -> Value {
        Value::Str(Blob::new(b"v"))
    }

    #[test]
    fn insert_find_remove() {
        let mut t = Table::default();
        for i in 0..10_000 {
            t.insert_new(Blob::new(format!("k{i}").as_bytes()), v());
        }
        assert_eq!(t.len(), 10_000);
        for i in (0..10_000).step_by(2) {
            let s = t.find(format!("k{i}").as_bytes()).unwrap();
            t.remove_slot(s);
        }
        assert_eq!(t.len(), 5_000);
        assert!(t.find(b"k2").is_none());
        assert!(t.find(b"k3").is_some());
        let (_, ins) = t.find_or_insert(b"k3", v);
        assert!(!ins);
        let (_, ins) = t.find_or_insert(b"k4", v);
        assert!(ins);
    }

    #[test]
    fn scan_returns_stable_keys_once_despite_growth_and_deletes() {
        let mut t = Table::default();
        for i in 0..1000 {
            t.insert_new(Blob::new(format!("a{i}").as_bytes()), v());
        }
        let mut seen = HashSet::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            cursor = t.scan(cursor, 10, |_, e| {
                assert!(seen.insert(e.key.to_vec()), "duplicate");
            });
            // Churn: grow the table (forcing index rehashes) and delete fresh keys, slower
            // than the scan advances so that it terminates.
            for j in 0..4 {
                t.insert_new(Blob::new(format!("b{round}-{j}").as_bytes()), v());
            }
            if let Some(s) = t.find(format!("b{round}-0").as_bytes()) {
                t.remove_slot(s);
            }
            round += 1;
            if cursor == 0 {
                break;
            }
        }
        for i in 0..1000 {
            assert!(seen.contains(format!("a{i}").as_bytes()));
        }
    }
}
