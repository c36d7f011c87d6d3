//! Training from a data set: the request (`dataset_id`, `target`, `features`) checked against
//! the data set's record, and the worker's side, which streams the columns it needs from
//! storage into a [`TrainingJob`].

use std::{io::Read, sync::Arc};

use futures::TryStreamExt;
use parquet::file::metadata::ParquetMetaData;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    columnar,
    scan::{self, parquet_file, Cells},
    ColumnType, DatasetError, DatasetRecord, DatasetStore, Format,
};
use crate::{
    model::FieldError,
    training::{data::target_names, ClassValue, FeatureValues, Params, Target, TrainingJob},
};

/// A queued job whose rows are in a data set (the record is a snapshot taken when queued).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetJob {
    pub dataset: DatasetRecord,
    pub features: Vec<String>,
    pub target: Vec<String>,
    pub multi_label: bool,
    pub params: Params,
}

impl DatasetJob {
    /// Checks `target` (a column, or a list of 0/1 columns) and `features` (default: every
    /// other column) against the record: each exists, no missing cells where training cannot
    /// take them (number features, targets).
    pub fn new(
        dataset: DatasetRecord,
        target: Option<&Value>,
        features: Option<&Value>,
        params: Result<Params, Vec<FieldError>>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some((target, multi_label)) = target_names(target, &mut errors) else {
            if let Err(problems) = params {
                errors.extend(problems);
            }
            return Err(errors);
        };
        let features: Vec<String> = match features {
            None | Some(Value::Null) => dataset
                .columns
                .iter()
                .map(|c| c.name.clone())
                .filter(|n| !target.contains(n))
                .collect(),
            Some(Value::Array(names)) if !names.is_empty() => {
                let mut out = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    match name.as_str() {
                        Some(name) if !out.iter().any(|n: &String| n == name) => {
                            out.push(name.to_owned());
                        }
                        Some(name) => errors.push(FieldError::new(
                            format!("features[{i}]"),
                            "invalid",
                            format!("`{name}` is listed twice"),
                        )),
                        None => errors.push(FieldError::new(
                            format!("features[{i}]"),
                            "type",
                            "expected a column name",
                        )),
                    }
                }
                out
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "features",
                    "type",
                    "expected a non-empty list of column names (default: every column but the target)",
                ));
                Vec::new()
            }
        };
        let columns: Vec<&str> = dataset.columns.iter().map(|c| c.name.as_str()).collect();
        for name in &target {
            match dataset.column(name) {
                None => errors.push(FieldError::new(
                    "target",
                    "missing",
                    format!(
                        "`{name}` is not a column of the data set (its columns: {})",
                        columns.join(", ")
                    ),
                )),
                Some(column) if column.missing > 0 => errors.push(FieldError::new(
                    "target",
                    "missing_values",
                    format!("target `{name}` has {} missing cells", column.missing),
                )),
                Some(_) => {}
            }
            if features.contains(name) {
                errors.push(FieldError::new(
                    "features",
                    "invalid",
                    format!("`{name}` is the target; it cannot also be a feature"),
                ));
            }
        }
        if features.is_empty() && errors.is_empty() {
            errors.push(FieldError::new(
                "features",
                "missing",
                "the data set has no columns besides the target",
            ));
        }
        for name in &features {
            match dataset.column(name) {
                None => errors.push(FieldError::new(
                    format!("features.{name}"),
                    "missing",
                    format!("`{name}` is not a column of the data set"),
                )),
                Some(column) if column.kind == ColumnType::Number && column.missing > 0 => {
                    errors.push(FieldError::new(
                        format!("features.{name}"),
                        "missing_values",
                        format!(
                            "number column `{name}` has {} missing cells, and missing numbers \
                             are not imputed; leave it out of `features`",
                            column.missing
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let params = match params {
            Ok(params) if errors.is_empty() => params,
            Ok(_) => return Err(errors),
            Err(mut problems) => {
                problems.extend(errors);
                return Err(problems);
            }
        };
        Ok(Self {
            dataset,
            features,
            target,
            multi_label,
            params,
        })
    }

    fn wanted(&self) -> Vec<(String, ColumnType)> {
        self.features
            .iter()
            .chain(&self.target)
            .map(|name| {
                let kind = self
                    .dataset
                    .column(name)
                    .map_or(ColumnType::Number, |c| c.kind);
                (name.clone(), kind)
            })
            .collect()
    }
}

/// Reads the job's columns from storage and builds the training job: from the Parquet copy
/// of a CSV's cells when the upload wrote one, or from the Parquet file uploaded, one row
/// group at a time; else the CSV, streamed. `rows_read` is called as rows arrive.
pub async fn load(
    store: &DatasetStore,
    job: &DatasetJob,
    rows_read: impl FnMut(u64) + Send + 'static,
) -> Result<TrainingJob, DatasetError> {
    let wanted = job.wanted();
    let rows = usize::try_from(job.dataset.rows).unwrap_or(0);
    let mut rows_read = rows_read;
    let parquet = match (&job.dataset.format, &job.dataset.columnar) {
        (Format::Parquet, _) => Some((job.dataset.location.as_str(), job.dataset.bytes)),
        (Format::Csv, Some(copy)) => Some((copy.location.as_str(), copy.bytes)),
        (Format::Csv, None) => None,
    };
    let cells = match parquet {
        Some((location, size)) => {
            read_parquet(store, location, size, &wanted, &mut rows_read).await?
        }
        None => {
            let stream = store
                .read(&job.dataset.location)
                .await?
                .map_err(std::io::Error::other);
            let reader =
                tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
            let gzip = job.dataset.gzip;
            tokio::task::spawn_blocking(move || {
                let reader: Box<dyn Read> = if gzip {
                    Box::new(flate2::read::MultiGzDecoder::new(reader))
                } else {
                    Box::new(reader)
                };
                scan::read_csv_columns(
                    std::io::BufReader::with_capacity(1 << 20, reader),
                    &wanted,
                    rows,
                    &mut rows_read,
                )
            })
            .await
            .map_err(|e| DatasetError::Internal(e.to_string()))??
        }
    };
    let job = job.clone();
    tokio::task::spawn_blocking(move || build(&job, cells))
        .await
        .map_err(|e| DatasetError::Internal(e.to_string()))?
}

/// A Parquet object's footer (`size` bytes long in all).
pub async fn parquet_metadata(
    store: &DatasetStore,
    location: &str,
    size: u64,
) -> Result<ParquetMetaData, DatasetError> {
    if size < 12 {
        return Err(DatasetError::invalid(
            "body",
            "format",
            "the body is too short to be a Parquet file",
        ));
    }
    let tail = store.read_range(location, size - 8..size).await?;
    let length = parquet_file::footer_length(&tail)?;
    if length + 8 > size {
        return Err(DatasetError::invalid(
            "body",
            "format",
            "the Parquet footer is longer than the file",
        ));
    }
    let footer = store
        .read_range(location, size - 8 - length..size - 8)
        .await?;
    parquet_file::decode_footer(&footer)
}

/// The columns `wanted` of a Parquet object, fetched a few row groups at a time (as many as
/// twice the rayon threads): the groups of a wave are decoded in parallel, each into its
/// own rows of the columns, while the next wave's bytes are fetched (so at most two waves'
/// wanted chunks are held at once, never the file).
async fn read_parquet(
    store: &DatasetStore,
    location: &str,
    size: u64,
    wanted: &[(String, ColumnType)],
    rows_read: &mut (impl FnMut(u64) + Send + 'static),
) -> Result<Vec<Cells>, DatasetError> {
    let metadata = Arc::new(parquet_metadata(store, location, size).await?);
    let indices = Arc::new(columnar::column_indices(&metadata, wanted)?);
    let groups = metadata.num_row_groups();
    let per_wave = rayon::current_num_threads().max(1) * 2;
    let waves: Vec<std::ops::Range<usize>> = (0..groups)
        .step_by(per_wave)
        .map(|g| g..(g + per_wave).min(groups))
        .collect();
    let fetch = |wave: Option<std::ops::Range<usize>>| {
        let (metadata, indices) = (metadata.clone(), indices.clone());
        async move {
            let ranges = wave.into_iter().flatten().map(|group| {
                metadata
                    .row_groups()
                    .get(group)
                    .map(|g| columnar::group_range(g, &indices))
                    .unwrap_or(0..0)
            });
            futures::future::try_join_all(ranges.map(|range| async move {
                let start = range.start;
                Ok::<_, DatasetError>((start, store.read_range(location, range).await?))
            }))
            .await
        }
    };
    let (columns, rows) = (wanted.to_vec(), columnar::total_rows(&metadata));
    let mut out = tokio::task::spawn_blocking(move || columnar::filled_cells(&columns, rows))
        .await
        .map_err(|e| DatasetError::Internal(e.to_string()))?;
    let mut count = 0u64;
    let mut fetched = fetch(waves.first().cloned()).await?;
    for (i, wave) in waves.iter().enumerate() {
        let bytes = std::mem::take(&mut fetched);
        let (metadata_, indices_, wave_) = (metadata.clone(), indices.clone(), wave.clone());
        let decode = tokio::task::spawn_blocking(move || {
            columnar::read_groups(&metadata_, wave_, bytes, &indices_, &mut out).map(|()| out)
        });
        let (decoded, next) = tokio::join!(decode, fetch(waves.get(i + 1).cloned()));
        out = decoded.map_err(|e| DatasetError::Internal(e.to_string()))??;
        fetched = next?;
        count += metadata
            .row_groups()
            .get(wave.clone())
            .unwrap_or_default()
            .iter()
            .map(|g| u64::try_from(g.num_rows()).unwrap_or(0))
            .sum::<u64>();
        rows_read(count);
    }
    Ok(out)
}

/// Typed columns into a training job (features first, then the target columns).
pub fn build(job: &DatasetJob, cells: Vec<Cells>) -> Result<TrainingJob, DatasetError> {
    use rayon::prelude::*;
    // Number features with a missing cell, the first one named: the columns searched on all
    // cores (each search reads a whole column; together they read the design matrix).
    let missing = job
        .features
        .par_iter()
        .zip(&cells)
        .find_map_first(|(name, cells)| match cells {
            Cells::Numbers(values) => values.iter().position(|v| v.is_nan()).map(|i| (name, i)),
            Cells::Texts(_) => None,
        });
    if let Some((name, missing)) = missing {
        return Err(DatasetError::invalid(
            name.clone(),
            "missing_values",
            format!(
                "number column `{name}` has a missing cell (row {})",
                missing + 1
            ),
        ));
    }
    let mut cells = cells.into_iter();
    let mut columns = Vec::with_capacity(job.features.len());
    for name in &job.features {
        columns.push(match cells.next() {
            Some(Cells::Numbers(values)) => FeatureValues::Numeric(values),
            Some(Cells::Texts(values)) => FeatureValues::Categorical(values),
            None => return Err(DatasetError::Internal(format!("column `{name}` not read"))),
        });
    }
    let target = if job.multi_label {
        let mut values = Vec::with_capacity(job.target.len());
        for name in &job.target {
            let flags = match cells.next() {
                Some(Cells::Numbers(v)) => v
                    .iter()
                    .map(|x| match *x {
                        0.0 => Ok(false),
                        1.0 => Ok(true),
                        _ => Err(x.to_string()),
                    })
                    .collect::<Result<Vec<bool>, String>>(),
                Some(Cells::Texts(v)) => v
                    .iter()
                    .map(|s| match s.to_ascii_lowercase().as_str() {
                        "0" | "false" => Ok(false),
                        "1" | "true" => Ok(true),
                        _ => Err(s.clone()),
                    })
                    .collect(),
                None => return Err(DatasetError::Internal(format!("column `{name}` not read"))),
            };
            values.push(flags.map_err(|bad| {
                DatasetError::invalid(
                    "target",
                    "type",
                    format!("`{bad}` in `{name}` is not a multi-label flag (0/1 or true/false)"),
                )
            })?);
        }
        Target::MultiLabel {
            names: job.target.clone(),
            values,
        }
    } else {
        let name = job.target.first().cloned().unwrap_or_default();
        let values = match cells.next() {
            Some(Cells::Numbers(v)) => v
                .iter()
                .map(|x| {
                    (x.fract() == 0.0 && x.abs() < 9.0e15)
                        .then_some(ClassValue::Int(*x as i64))
                        .ok_or_else(|| {
                            DatasetError::invalid(
                                "target",
                                "type",
                                format!(
                                    "`{x}` in `{name}` is not a class label (an integer or a \
                                     string); logistic regression is a classifier"
                                ),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Cells::Texts(v)) => v.into_iter().map(ClassValue::Str).collect(),
            None => return Err(DatasetError::Internal(format!("column `{name}` not read"))),
        };
        Target::Classes {
            name: Some(name),
            values,
        }
    };
    Ok(TrainingJob {
        features: job.features.clone(),
        columns,
        target,
        params: job.params.clone(),
    })
}
