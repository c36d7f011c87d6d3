//! The in-process registry: one node, nothing to install (`make run`).

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, RwLock};
use uuid::Uuid;

use super::{
    check_alias_target, shadow::promotion_outcome, AliasView, Challenger, ListQuery, ModelRecord,
    ModelRegistry, Page, Promotion, RegistryError, RegistryEvent, ShadowKey, Tally,
};

#[derive(Default)]
struct State {
    /// Ordered by id: UUIDv7 ids sort by creation time.
    records: BTreeMap<Uuid, ModelRecord>,
    onnx: HashMap<Uuid, Bytes>,
    versions: HashMap<String, u64>,
    aliases: BTreeMap<(String, String), Uuid>,
    challengers: BTreeMap<(String, String), Challenger>,
    shadow_stats: HashMap<ShadowKey, Tally>,
}

pub struct EmbeddedRegistry {
    state: RwLock<State>,
    events: broadcast::Sender<RegistryEvent>,
    view: AliasView,
}

impl Default for EmbeddedRegistry {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            events: broadcast::channel(1024).0,
            view: AliasView::default(),
        }
    }
}

impl EmbeddedRegistry {
    /// Applies a change to this process's alias view before the write returns, then
    /// notifies subscribers.
    fn publish(&self, event: RegistryEvent) {
        self.view.apply(&event);
        // No receiver is fine: nobody is listening yet.
        let _ = self.events.send(event);
    }
}

#[async_trait]
impl ModelRegistry for EmbeddedRegistry {
    async fn create(
        &self,
        mut record: ModelRecord,
        onnx: Option<Bytes>,
    ) -> Result<ModelRecord, RegistryError> {
        let mut state = self.state.write().await;
        let version = state.versions.entry(record.name.clone()).or_insert(0);
        *version += 1;
        record.version = *version;
        if let Some(bytes) = onnx {
            state.onnx.insert(record.id, bytes);
        }
        state.records.insert(record.id, record.clone());
        drop(state);
        self.publish(RegistryEvent::Updated {
            id: record.id,
            name: record.name.clone(),
        });
        Ok(record)
    }

    async fn update(&self, record: &ModelRecord) -> Result<(), RegistryError> {
        let mut state = self.state.write().await;
        let stored = state
            .records
            .get_mut(&record.id)
            .ok_or_else(|| RegistryError::NotFound(record.id.to_string()))?;
        *stored = record.clone();
        drop(state);
        self.publish(RegistryEvent::Updated {
            id: record.id,
            name: record.name.clone(),
        });
        Ok(())
    }

    async fn complete(&self, record: &ModelRecord, onnx: Bytes) -> Result<(), RegistryError> {
        let mut state = self.state.write().await;
        if !state.records.contains_key(&record.id) {
            return Err(RegistryError::NotFound(record.id.to_string()));
        }
        state.onnx.insert(record.id, onnx);
        state.records.insert(record.id, record.clone());
        state
            .aliases
            .insert((record.name.clone(), super::LATEST.to_owned()), record.id);
        drop(state);
        self.publish(RegistryEvent::AliasMoved {
            name: record.name.clone(),
            alias: super::LATEST.to_owned(),
            id: record.id,
        });
        self.publish(RegistryEvent::Updated {
            id: record.id,
            name: record.name.clone(),
        });
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<ModelRecord>, RegistryError> {
        Ok(self.state.read().await.records.get(&id).cloned())
    }

    async fn onnx(&self, id: Uuid) -> Result<Option<Bytes>, RegistryError> {
        Ok(self.state.read().await.onnx.get(&id).cloned())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<ModelRecord>, RegistryError> {
        let state = self.state.read().await;
        Ok(query.page(state.records.values().rev().cloned()))
    }

    async fn delete(&self, id: Uuid) -> Result<bool, RegistryError> {
        let mut state = self.state.write().await;
        let Some(record) = state.records.remove(&id) else {
            return Ok(false);
        };
        state.onnx.remove(&id);
        state.aliases.retain(|_, target| *target != id);
        state.challengers.retain(|_, c| c.challenger != id);
        drop(state);
        self.publish(RegistryEvent::Deleted {
            id,
            name: record.name,
        });
        Ok(true)
    }

    async fn set_alias(&self, name: &str, alias: &str, id: Uuid) -> Result<(), RegistryError> {
        let mut state = self.state.write().await;
        check_alias_target(state.records.get(&id), name, id)?;
        state
            .aliases
            .insert((name.to_owned(), alias.to_owned()), id);
        drop(state);
        self.publish(RegistryEvent::AliasMoved {
            name: name.to_owned(),
            alias: alias.to_owned(),
            id,
        });
        Ok(())
    }

    async fn import(
        &self,
        mut record: ModelRecord,
        onnx: Bytes,
    ) -> Result<ModelRecord, RegistryError> {
        let mut state = self.state.write().await;
        let existing = state
            .records
            .values()
            .find(|stored| stored.name == record.name && stored.sha256 == record.sha256)
            .cloned();
        let stored = match existing {
            Some(stored) => stored,
            None => {
                let version = state.versions.entry(record.name.clone()).or_insert(0);
                *version += 1;
                record.version = *version;
                state.onnx.insert(record.id, onnx);
                state.records.insert(record.id, record.clone());
                record
            }
        };
        let latest = (stored.name.clone(), super::LATEST.to_owned());
        let moved = !state.aliases.contains_key(&latest);
        if moved {
            state.aliases.insert(latest, stored.id);
        }
        drop(state);
        self.publish(RegistryEvent::Updated {
            id: stored.id,
            name: stored.name.clone(),
        });
        if moved {
            self.publish(RegistryEvent::AliasMoved {
                name: stored.name.clone(),
                alias: super::LATEST.to_owned(),
                id: stored.id,
            });
        }
        Ok(stored)
    }

    async fn alias(&self, name: &str, alias: &str) -> Result<Option<Uuid>, RegistryError> {
        let state = self.state.read().await;
        Ok(state
            .aliases
            .get(&(name.to_owned(), alias.to_owned()))
            .copied())
    }

    fn view(&self) -> &AliasView {
        &self.view
    }

    async fn aliases(&self) -> Result<Vec<(String, String, Uuid)>, RegistryError> {
        let state = self.state.read().await;
        Ok(state
            .aliases
            .iter()
            .map(|((name, alias), id)| (name.clone(), alias.clone(), *id))
            .collect())
    }

    async fn set_challenger(
        &self,
        name: &str,
        alias: &str,
        challenger: Option<Challenger>,
    ) -> Result<(), RegistryError> {
        let mut state = self.state.write().await;
        let key = (name.to_owned(), alias.to_owned());
        match challenger {
            Some(challenger) => {
                let id = challenger.challenger;
                check_alias_target(state.records.get(&id), name, id)?;
                state.challengers.insert(key, challenger);
            }
            None => {
                state.challengers.remove(&key);
            }
        }
        drop(state);
        self.publish(RegistryEvent::ChallengerChanged {
            name: name.to_owned(),
            alias: alias.to_owned(),
        });
        Ok(())
    }

    async fn challengers(&self) -> Result<Vec<(String, String, Challenger)>, RegistryError> {
        let state = self.state.read().await;
        Ok(state
            .challengers
            .iter()
            .map(|((name, alias), c)| (name.clone(), alias.clone(), *c))
            .collect())
    }

    async fn promote(
        &self,
        name: &str,
        alias: &str,
        expected: Promotion,
    ) -> Result<(), RegistryError> {
        let mut guard = self.state.write().await;
        let state = &mut *guard;
        let key = (name.to_owned(), alias.to_owned());
        if state.aliases.get(&key) != Some(&expected.champion) {
            return promotion_outcome(0, name, alias);
        }
        let Some(challenger) = state
            .challengers
            .get_mut(&key)
            .filter(|c| c.challenger == expected.challenger)
        else {
            return promotion_outcome(-1, name, alias);
        };
        challenger.challenger = expected.champion;
        state.aliases.insert(key, expected.challenger);
        drop(guard);
        self.publish(RegistryEvent::AliasMoved {
            name: name.to_owned(),
            alias: alias.to_owned(),
            id: expected.challenger,
        });
        self.publish(RegistryEvent::ChallengerChanged {
            name: name.to_owned(),
            alias: alias.to_owned(),
        });
        Ok(())
    }

    async fn add_shadow_stats(&self, tallies: &[(ShadowKey, Tally)]) -> Result<(), RegistryError> {
        let mut state = self.state.write().await;
        for (key, tally) in tallies {
            state
                .shadow_stats
                .entry(key.clone())
                .or_default()
                .merge(tally);
        }
        Ok(())
    }

    async fn shadow_stats(&self, key: &ShadowKey) -> Result<Tally, RegistryError> {
        let state = self.state.read().await;
        Ok(state.shadow_stats.get(key).cloned().unwrap_or_default())
    }

    fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    async fn ping(&self) -> Result<(), RegistryError> {
        Ok(())
    }
}
