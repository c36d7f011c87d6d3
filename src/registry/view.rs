//! A process's copy of the registry's aliases, kept current by the registry backend itself:
//! the embedded registry updates it inside each write, the Redis registry when a change
//! notification arrives (before it acknowledges the notification, see
//! [`super::redis::RedisRegistry`]) and on every full re-read. Readers never wait on the
//! backing store.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    },
};

use uuid::Uuid;

use super::RegistryEvent;

/// Deleted ids remembered, so a model deleted through another replica stops being served
/// by id before its cache entry is dropped.
const TOMBSTONES: usize = 4096;

/// Hash maps keyed by names and ids this process chose or read from its own registry:
/// foldhash, as `model::contract` uses, since every request looks its model up here.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<T> = HashSet<T, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct AliasView {
    /// Model name, then alias: a lookup by `(&str, &str)` allocates nothing.
    aliases: RwLock<Map<String, Map<String, Uuid>>>,
    deleted: RwLock<(Set<Uuid>, VecDeque<Uuid>)>,
    /// Bumped by every change notification: a full re-read that started before a change
    /// must not overwrite it.
    changes: AtomicU64,
}

fn point(aliases: &mut Map<String, Map<String, Uuid>>, name: &str, alias: &str, id: Uuid) {
    aliases
        .entry(name.to_owned())
        .or_default()
        .insert(alias.to_owned(), id);
}

impl AliasView {
    pub fn get(&self, name: &str, alias: &str) -> Option<Uuid> {
        self.aliases.read().ok()?.get(name)?.get(alias).copied()
    }

    pub fn is_deleted(&self, id: Uuid) -> bool {
        self.deleted
            .read()
            .map(|deleted| deleted.0.contains(&id))
            .unwrap_or(false)
    }

    /// A token to pass to [`Self::replace_if_unchanged`] with the result of a full read
    /// started after this call.
    pub fn generation(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Installs a full read of the aliases, unless a change notification arrived since
    /// `generation` was taken (the read may predate it; the next re-read installs it).
    pub fn replace_if_unchanged(&self, generation: u64, all: &[(String, String, Uuid)]) -> bool {
        let Ok(mut aliases) = self.aliases.write() else {
            return false;
        };
        if self.changes.load(Ordering::SeqCst) != generation {
            return false;
        }
        aliases.clear();
        for (name, alias, id) in all {
            point(&mut aliases, name, alias, *id);
        }
        true
    }

    /// Records one alias read from the backing store.
    pub fn learn(&self, name: &str, alias: &str, id: Uuid) {
        if let Ok(mut aliases) = self.aliases.write() {
            point(&mut aliases, name, alias, id);
        }
    }

    /// Applies a change notification.
    pub fn apply(&self, event: &RegistryEvent) {
        match event {
            RegistryEvent::AliasMoved { name, alias, id } => {
                if let Ok(mut aliases) = self.aliases.write() {
                    point(&mut aliases, name, alias, *id);
                    self.changes.fetch_add(1, Ordering::SeqCst);
                }
            }
            RegistryEvent::Deleted { id, .. } => {
                if let Ok(mut aliases) = self.aliases.write() {
                    for by_alias in aliases.values_mut() {
                        by_alias.retain(|_, target| target != id);
                    }
                    aliases.retain(|_, by_alias| !by_alias.is_empty());
                    self.changes.fetch_add(1, Ordering::SeqCst);
                }
                if let Ok(mut deleted) = self.deleted.write() {
                    let (set, order) = &mut *deleted;
                    if set.insert(*id) {
                        order.push_back(*id);
                        if order.len() > TOMBSTONES {
                            if let Some(oldest) = order.pop_front() {
                                set.remove(&oldest);
                            }
                        }
                    }
                }
            }
            RegistryEvent::Updated { .. } | RegistryEvent::ChallengerChanged { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_read_does_not_undo_a_notification_that_arrived_during_it() {
        let view = AliasView::default();
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        let generation = view.generation();
        view.apply(&RegistryEvent::AliasMoved {
            name: "m".into(),
            alias: "latest".into(),
            id: new,
        });
        assert!(!view.replace_if_unchanged(generation, &[("m".into(), "latest".into(), old)]));
        assert_eq!(view.get("m", "latest"), Some(new));
        let generation = view.generation();
        assert!(view.replace_if_unchanged(generation, &[("m".into(), "latest".into(), old)]));
        assert_eq!(view.get("m", "latest"), Some(old));
    }

    #[test]
    fn a_deleted_model_loses_its_aliases_and_is_remembered() {
        let view = AliasView::default();
        let id = Uuid::now_v7();
        view.learn("m", "prod", id);
        view.apply(&RegistryEvent::Deleted {
            id,
            name: "m".into(),
        });
        assert_eq!(view.get("m", "prod"), None);
        assert!(view.is_deleted(id));
    }
}
