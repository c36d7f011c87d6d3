//! Data sets as a resource: uploaded once (`POST /datasets`), stored through one object-store
//! abstraction ([`store`]), described by a small record ([`records`]: in Redis with
//! `--registry redis`, in memory otherwise), and read back by the training worker, which
//! streams the bytes from storage ([`load`]). The HTTP server never holds a whole data set.
//!
//! - [`scan`]: the CSV reader shared by the upload (types, rows, errors by line and column)
//!   and the worker (typed columns), plus Parquet's footer.
//! - [`blocks`]: the upload's CSV cut into blocks of whole records, parsed in parallel.
//! - [`columnar`]: the Parquet file of a CSV's cells written during its upload (what the
//!   store keeps of a CSV, so training does not parse text again), and the column reader of
//!   Parquet files.

pub mod blocks;
pub mod columnar;
pub mod load;
pub mod records;
pub mod scan;
pub mod store;
pub mod tokens;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use records::{DatasetRecords, EmbeddedDatasets, RedisDatasets};
pub use store::DatasetStore;

/// How the stored bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV with a header line (uploaded so; stored as the Parquet file of its cells, see
    /// [`DatasetRecord::columnar`]).
    Csv,
    Parquet,
}

/// A column's inferred type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// Every present cell is a finite number.
    Number,
    /// Text: a categorical feature, or a class label.
    String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Cells that are empty (or `NA`, `NaN`, `null`, ... as pandas reads them).
    #[serde(default)]
    pub missing: u64,
}

/// What `POST /datasets` answers and the registry keeps: never the data itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetRecord {
    pub dataset_id: Uuid,
    /// An optional label (`?name=`), for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub format: Format,
    /// Whether the CSV was uploaded gzip-compressed.
    #[serde(default)]
    pub gzip: bool,
    pub rows: u64,
    pub columns: Vec<ColumnInfo>,
    /// Bytes uploaded (compressed or not).
    pub bytes: u64,
    /// The object's path inside the dataset store (for a CSV, the same as `columnar`'s; data
    /// sets uploaded before ml-api stopped keeping the CSV text name the CSV here).
    pub location: String,
    /// CSV: the Parquet file of its cells, written while it was uploaded: what the store
    /// keeps of it, and what training reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columnar: Option<StoredObject>,
    pub created_at_ms: u64,
}

/// An object in the dataset store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredObject {
    pub location: String,
    pub bytes: u64,
}

impl DatasetRecord {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The bytes are not a data set ml-api reads: `field` names the line/column or part.
    #[error("{message}")]
    Invalid {
        field: String,
        reason: &'static str,
        message: String,
    },
    /// The store or the records cannot be reached.
    #[error("dataset storage unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl DatasetError {
    pub fn invalid(
        field: impl Into<String>,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            reason,
            message: message.into(),
        }
    }
}

impl From<object_store::Error> for DatasetError {
    fn from(error: object_store::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}
