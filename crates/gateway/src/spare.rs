//! Allocations of the request path. Header maps are kept for reuse, one stock per thread.
//! Each proxied request builds two maps (the client's request and the upstream's answer) and
//! drops both once their heads are written; allocating, zeroing and freeing them was a tenth
//! of what the pipeline spent on a request outside the parses themselves. A map written out
//! goes back to its thread's stock emptied (its values dropped at once: no buffer of the
//! connection is held by a spare map), and the next head read takes it.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: as many as requests in flight on a worker at once, within reason.
const STOCK: usize = 128;
/// A map grown past this many fields (a request with many headers) is not kept: the stock
/// stays small, whatever the traffic was.
const MAX_FIELDS: usize = 64;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields` fields without growing.
pub fn map(fields: usize) -> HeaderMap {
    let spare = MAPS.with(|m| m.try_borrow_mut().ok().and_then(|mut m| m.pop()));
    match spare {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives `map` back, emptied, for a later [`map`].
pub fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_FIELDS {
        return;
    }
    map.clear();
    MAPS.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut()
            && m.len() < STOCK
        {
            m.push(map);
        }
    });
}

/// `make()`'s future, pinned in an allocation made before it is built. `Box::pin(f)` builds
/// the future on the stack and copies all of its type's size to the heap, whatever part the
/// future's first state uses (the pipeline's is about 4 KiB, of which its arguments take
/// 300 bytes): allocated first, the future is built in place.
#[inline(always)]
pub fn pinned<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_map_comes_back_empty_with_its_room() {
        let mut m = map(12);
        let room = m.capacity();
        assert!(room >= 12);
        m.insert("x-a", HeaderValue::from_static("1"));
        m.append("x-b", HeaderValue::from_static("2"));
        give(m);
        let again = map(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room, "the stock's map, not a new one");
        // Room is made when more is asked than the spare has.
        give(again);
        assert!(map(room + 40).capacity() >= room + 40);
    }

    #[test]
    fn large_maps_and_a_full_stock_are_not_kept() {
        let big = HeaderMap::with_capacity(MAX_FIELDS * 2);
        give(big);
        assert!(map(1).capacity() <= MAX_FIELDS);
        for _ in 0..STOCK + 10 {
            give(HeaderMap::with_capacity(8));
        }
        let kept = MAPS.with(|m| m.borrow().len());
        assert_eq!(kept, STOCK);
    }
}
