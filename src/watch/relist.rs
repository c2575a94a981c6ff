//! What a relist missed: the objects a watch knew that its new initial list no longer has.
//!
//! kube's watcher lists again after a watch expired (410 Gone, an API server restart), as
//! `Init`, one `InitApply` per object, `InitDone`; an object deleted while the watch was down
//! gets no `Delete` event. Each consumer that remembers objects follows the lists with a
//! [`Relist`] and, at `InitDone`, treats the known objects the list missed as deleted.

use std::{collections::HashSet, hash::Hash};

/// The keys seen by the initial list in progress, if one is.
///
/// ```
/// use kube_sentinel::watch::relist::Relist;
///
/// let mut relist = Relist::default();
/// relist.start();
/// relist.saw("a");
/// let listed = relist.done().expect("a list was in progress");
/// assert_eq!(listed.missing(&["a", "b"]), ["b"]);
/// assert!(relist.done().is_none(), "no list in progress");
/// ```
#[derive(Debug)]
pub struct Relist<K> {
    listing: Option<HashSet<K>>,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Self { listing: None }
    }
}

impl<K: Eq + Hash> Relist<K> {
    /// A list begins (`Init`): it has seen nothing yet.
    pub fn start(&mut self) {
        self.listing = Some(HashSet::new());
    }

    /// The list in progress has `key` (`InitApply`); ignored outside a list.
    pub fn saw(&mut self, key: K) {
        if let Some(listing) = self.listing.as_mut() {
            listing.insert(key);
        }
    }

    /// The list is complete (`InitDone`): what it had, or `None` if no list was in progress.
    pub fn done(&mut self) -> Option<Listed<K>> {
        self.listing.take().map(Listed)
    }
}

/// The keys one complete initial list had.
#[derive(Debug)]
pub struct Listed<K>(HashSet<K>);

impl<K: Eq + Hash> Listed<K> {
    /// Whether the list had `key`.
    pub fn contains(&self, key: &K) -> bool {
        self.0.contains(key)
    }

    /// The keys of `known` the list did not have: deleted while the watch was down.
    pub fn missing<'a>(&self, known: impl IntoIterator<Item = &'a K>) -> Vec<K>
    where
        K: Clone + 'a,
    {
        known
            .into_iter()
            .filter(|key| !self.0.contains(*key))
            .cloned()
            .collect()
    }
}
