//! A model being served: loading it (from the registry or a model directory), the catalog
//! of what this replica serves (aliases, pins, cache, sync), and the [`Scorer`] every
//! prediction route calls (decode, contract, drift, inference, shadow hook, metrics).

pub mod catalog;
pub mod load;
pub mod metrics;
pub mod scorer;
pub mod tensors;

pub use catalog::{Catalog, CatalogError, CatalogSettings, ModelRef};
pub use load::{LoadedModel, ModelSource};
pub use scorer::{Decoded, ScoreError, Scored, Scorer, Timings};
