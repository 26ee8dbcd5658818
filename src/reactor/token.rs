//! Naming connections safely: a slab slot plus a generation.
//!
//! Slots are reused as soon as they are freed, so a bare index would let an
//! old name reach the slot's next owner. Pairing the index with a generation
//! that changes on every insert makes every old name miss instead.

use std::cell::Cell;
use std::fmt;
use std::num::NonZeroU32;

use slab::Slab;

/// The name of one connection, for its whole life and never after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    index: u32,
    generation: NonZeroU32,
}

impl ConnId {
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation.get()
    }
}

thread_local! {
    /// The reactor this thread runs, in a process that runs several: the
    /// ids in its log lines carry it, as the connection table's rows do.
    static REACTOR: Cell<Option<usize>> = const { Cell::new(None) };
}

/// From now on, ids written on this thread carry reactor `i`: `1/c0.1`.
pub(crate) fn label_ids_with_reactor(i: usize) {
    REACTOR.set(Some(i));
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(reactor) = REACTOR.get() {
            write!(f, "{reactor}/")?;
        }
        write!(f, "c{}.{}", self.index, self.generation)
    }
}

/// What a poller event's 64-bit token names. Connections carry a non-zero
/// generation in the high half; generation 0 is left for the reactor's own fds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Conn(ConnId),
    Listener(usize),
    Waker,
    Signals,
}

const WAKER_INDEX: u32 = u32::MAX;
const SIGNALS_INDEX: u32 = u32::MAX - 1;

impl Token {
    pub(crate) fn to_u64(self) -> u64 {
        match self {
            Token::Conn(id) => (u64::from(id.generation.get()) << 32) | u64::from(id.index),
            Token::Listener(i) => i as u64,
            Token::Waker => u64::from(WAKER_INDEX),
            Token::Signals => u64::from(SIGNALS_INDEX),
        }
    }

    pub(crate) fn from_u64(raw: u64) -> Token {
        let index = raw as u32;
        match NonZeroU32::new((raw >> 32) as u32) {
            Some(generation) => Token::Conn(ConnId { index, generation }),
            None if index == WAKER_INDEX => Token::Waker,
            None if index == SIGNALS_INDEX => Token::Signals,
            None => Token::Listener(index as usize),
        }
    }
}

/// A slab whose entries are reached only through a matching [`ConnId`].
pub(crate) struct Table<T> {
    slab: Slab<(NonZeroU32, T)>,
    next_generation: NonZeroU32,
}

impl<T> Table<T> {
    pub(crate) fn new() -> Self {
        Table {
            slab: Slab::new(),
            next_generation: NonZeroU32::MIN,
        }
    }

    /// The id the next `insert` will return, so the value can know its own name.
    pub(crate) fn next_id(&self) -> ConnId {
        ConnId {
            index: self.slab.vacant_key() as u32,
            generation: self.next_generation,
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> ConnId {
        let id = self.next_id();
        self.next_generation = self
            .next_generation
            .checked_add(1)
            .unwrap_or(NonZeroU32::MIN);
        self.slab.insert((id.generation, value));
        id
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&T> {
        match self.slab.get(id.index()) {
            Some((generation, value)) if *generation == id.generation => Some(value),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.slab.get_mut(id.index()) {
            Some((generation, value)) if *generation == id.generation => Some(value),
            _ => None,
        }
    }

    /// Two different entries at once.
    pub(crate) fn get2_mut(&mut self, a: ConnId, b: ConnId) -> Option<(&mut T, &mut T)> {
        let ((ga, va), (gb, vb)) = self.slab.get2_mut(a.index(), b.index())?;
        (*ga == a.generation && *gb == b.generation).then_some((va, vb))
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<T> {
        self.get(id)?;
        Some(self.slab.remove(id.index()).1)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> {
        self.slab.iter().map(|(index, (generation, value))| {
            let id = ConnId {
                index: index as u32,
                generation: *generation,
            };
            (id, value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let mut table = Table::new();
        let id = table.insert(());
        for token in [
            Token::Conn(id),
            Token::Listener(0),
            Token::Listener(7),
            Token::Waker,
        ] {
            assert_eq!(Token::from_u64(token.to_u64()), token);
        }
    }

    #[test]
    fn stale_id_for_reused_slot_is_ignored() {
        let mut table = Table::new();
        let old = table.insert("old owner");
        assert_eq!(table.remove(old), Some("old owner"));
        let new = table.insert("new owner");
        assert_eq!(old.index(), new.index(), "the slot is reused");
        assert_ne!(old, new);
        assert_eq!(table.get(old), None);
        assert_eq!(table.get_mut(old), None);
        assert_eq!(
            table.remove(old),
            None,
            "a stale id cannot free the new owner"
        );
        assert_eq!(table.get(new), Some(&"new owner"));
        // The same holds for the event the kernel may still hand back for the old token.
        let Token::Conn(from_event) = Token::from_u64(Token::Conn(old).to_u64()) else {
            panic!("a connection token decodes as a connection");
        };
        assert_eq!(table.get(from_event), None);
    }

    #[test]
    fn generation_wraps_past_zero() {
        let mut table = Table::new();
        table.next_generation = NonZeroU32::MAX;
        let last = table.insert(1);
        let wrapped = table.insert(2);
        assert_eq!(wrapped.generation, NonZeroU32::MIN);
        assert_eq!(table.get(last), Some(&1));
        assert_eq!(table.get(wrapped), Some(&2));
    }
}
