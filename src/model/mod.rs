//! What a model is to ml-api: its card, the schema derived from its graph, and the
//! conversion of request JSON into validated model input.

pub mod batch;
pub mod card;
pub mod contract;
pub mod decode;
pub mod error;
pub mod schema;

pub use batch::{Column, FeatureBatch, Scores};
pub use card::ModelCard;
pub use contract::Contract;
pub use error::FieldError;
pub use schema::{ElementType, InputSpec, ModelSchema, OutputSpec};
