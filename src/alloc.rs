//! The process's allocator: mimalloc, with a small last-in, first-out cache per thread of
//! the block sizes packets use.
//!
//! A simulated packet lives for the milliseconds its link takes, and a large world has
//! hundreds of thousands in flight: far more memory than the cache holds. mimalloc hands
//! out a freed block only after the others of its page (its free lists are sharded by
//! design), so nearly every packet a node builds landed in a block nobody had touched
//! for a long time, and reading the block's free-list link was the costliest load of a
//! delivery in a million-client world. A node usually frees the packet it received just
//! before it builds the next one; this cache hands that block straight back, still in
//! the cache, as glibc's per-thread cache does.
//!
//! Byte buffers (alignment 1: packets, not structs) of up to [`CACHED_MAX`] bytes are
//! allocated whole size classes of [`GRAIN`] bytes, so any block of a class can serve any
//! request of it; a thread keeps at most [`DEPTH`] blocks a class and returns them to
//! mimalloc when it ends. Everything else goes to mimalloc as asked: rounding every small
//! struct up to a class took a tenth more memory in a million-client world.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;

use mimalloc::MiMalloc;

/// Size classes are multiples of this many bytes.
const GRAIN: usize = 64;
const CLASSES: usize = 32;
/// The largest request the cache serves (a 1,500-byte packet and its envelope).
pub const CACHED_MAX: usize = GRAIN * CLASSES;
/// Blocks a thread keeps per class.
const DEPTH: usize = 32;
/// Blocks are asked of mimalloc with this alignment (its own for these sizes).
const ALIGN: usize = 16;

/// The class of a request the cache serves: a byte buffer of a packet's size.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    (size > 0 && size <= CACHED_MAX && layout.align() == 1).then(|| (size - 1) / GRAIN)
}

fn class_layout(class: usize) -> Layout {
    // (class + 1) * GRAIN is at most CACHED_MAX and ALIGN a power of two.
    Layout::from_size_align((class + 1) * GRAIN, ALIGN).unwrap_or(Layout::new::<[u8; CACHED_MAX]>())
}

struct Stacks {
    len: [usize; CLASSES],
    blocks: [[*mut u8; DEPTH]; CLASSES],
}

impl Drop for Stacks {
    fn drop(&mut self) {
        for class in 0..CLASSES {
            for &block in &self.blocks[class][..self.len[class]] {
                // SAFETY: every cached block came from MiMalloc with its class's layout
                // and is owned by nobody else.
                unsafe { MiMalloc.dealloc(block, class_layout(class)) };
            }
            self.len[class] = 0;
        }
    }
}

thread_local! {
    static STACKS: UnsafeCell<Stacks> =
        const { UnsafeCell::new(Stacks { len: [0; CLASSES], blocks: [[std::ptr::null_mut(); DEPTH]; CLASSES] }) };
}

/// A cached block of `class`, if this thread holds one.
fn take(class: usize) -> Option<*mut u8> {
    STACKS
        .try_with(|s| {
            // SAFETY: the cell is this thread's, and nothing here reenters the allocator.
            let s = unsafe { &mut *s.get() };
            let len = s.len[class];
            (len > 0).then(|| {
                s.len[class] = len - 1;
                s.blocks[class][len - 1]
            })
        })
        .ok()
        .flatten()
}

/// Keeps `block` of `class` for this thread's next request of it; false when full (or
/// the thread is ending).
fn keep(class: usize, block: *mut u8) -> bool {
    STACKS
        .try_with(|s| {
            // SAFETY: as in `take`.
            let s = unsafe { &mut *s.get() };
            let len = s.len[class];
            if len == DEPTH {
                return false;
            }
            s.blocks[class][len] = block;
            s.len[class] = len + 1;
            true
        })
        .unwrap_or(false)
}

/// mimalloc's `mi_option_purge_delay` (the 16th of `mi_option_e`, in its v2 and v3
/// headers alike; the crate names it only as a number).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory the process frees stays with it until it ends, instead of going back to the
/// system 10 ms after (mimalloc's default). A simulation's memory is its traffic in
/// flight, freed and taken again every few milliseconds: given back, each page was
/// faulted and zeroed again when next used. In a million-client world that was 90,000
/// page faults in 5 simulated seconds and a fifth of its wall time; the peak stays
/// within 1 %. For the simulator's commands only: a node that lived through a flood
/// gives its memory back.
pub fn keep_freed_memory() {
    // SAFETY: sets one option to a value its header documents (-1: never purge);
    // mimalloc reads it at each purge, so setting it before the work starts suffices.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
}

/// mimalloc's setting now, for the test.
#[cfg(test)]
fn purge_delay() -> i64 {
    // SAFETY: reads one option.
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) as i64 }
}

pub struct Allocator;

// SAFETY: every block handed out is MiMalloc's, of at least the size and alignment asked
// (a served request's class layout covers it); a block of a served class is always
// allocated with the class layout, so the cache only ever holds whole class blocks, and
// a block leaves the cache to one owner.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => match take(class) {
                Some(block) => block,
                // SAFETY: a non-zero size (the class's).
                None => unsafe { MiMalloc.alloc(class_layout(class)) },
            },
            // SAFETY: the caller's layout, as GlobalAlloc asks.
            None => unsafe { MiMalloc.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => match take(class) {
                Some(block) => {
                    // SAFETY: the block holds the class's bytes, at least layout.size().
                    unsafe { block.write_bytes(0, layout.size()) };
                    block
                }
                // SAFETY: as in alloc.
                None => unsafe { MiMalloc.alloc_zeroed(class_layout(class)) },
            },
            // SAFETY: as in alloc.
            None => unsafe { MiMalloc.alloc_zeroed(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(class) if keep(class, ptr) => {}
            // SAFETY: the block is MiMalloc's (of its class layout when served).
            Some(class) => unsafe { MiMalloc.dealloc(ptr, class_layout(class)) },
            // SAFETY: as above.
            None => unsafe { MiMalloc.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's caller gives a size that, with the old alignment, is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let (old_class, new_class) = (class_of(layout), class_of(new_layout));
        if old_class.is_none() && new_class.is_none() {
            // SAFETY: a block outside the served classes is MiMalloc's own.
            return unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        }
        if old_class.is_some() && old_class == new_class {
            return ptr;
        }
        // SAFETY: the new block is fresh; both hold at least the bytes copied.
        unsafe {
            let fresh = self.alloc(new_layout);
            if !fresh.is_null() {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            fresh
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulator_keeps_what_it_frees() {
        assert_ne!(purge_delay(), -1, "mimalloc purges by default");
        keep_freed_memory();
        assert_eq!(purge_delay(), -1, "never purged: pages are not faulted and zeroed again");
    }

    /// Every size around the classes' edges, grown and shrunk across them: what was
    /// written stays, and a block freed is what the next request of its class gets.
    #[test]
    fn blocks_keep_their_bytes_across_classes_and_a_freed_block_is_reused_first() {
        let a = Allocator;
        for size in [1, 63, 64, 65, 1500, CACHED_MAX - 1, CACHED_MAX, CACHED_MAX + 1, 70_000] {
            for new_size in [1, 64, 65, 1514, CACHED_MAX, CACHED_MAX + 1, 100_000] {
                let layout = Layout::from_size_align(size, 1).unwrap();
                // SAFETY: sizes are non-zero; each block is freed once with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    for i in 0..size {
                        *p.add(i) = i as u8;
                    }
                    let q = a.realloc(p, layout, new_size);
                    for i in 0..size.min(new_size) {
                        assert_eq!(*q.add(i), i as u8, "{size} -> {new_size}, byte {i}");
                    }
                    let z = a.alloc_zeroed(Layout::from_size_align(new_size, 1).unwrap());
                    assert!((0..new_size).all(|i| *z.add(i) == 0), "zeroed {new_size}");
                    a.dealloc(z, Layout::from_size_align(new_size, 1).unwrap());
                    a.dealloc(q, Layout::from_size_align(new_size, 1).unwrap());
                    // A struct's block is mimalloc's, as asked.
                    let s = a.alloc(Layout::from_size_align(size, 8).unwrap());
                    assert_eq!(s as usize % 8, 0);
                    a.dealloc(s, Layout::from_size_align(size, 8).unwrap());
                }
            }
        }
        let layout = Layout::from_size_align(1500, 1).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = a.alloc(layout);
            a.dealloc(p, layout);
            let again = a.alloc(Layout::from_size_align(1480, 1).unwrap());
            assert_eq!(again, p, "the block just freed serves the next request of its class");
            a.dealloc(again, Layout::from_size_align(1480, 1).unwrap());
        }
    }
}
