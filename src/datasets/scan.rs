//! Reading data sets: CSV through the `csv` crate (RFC 4180, any line ends, a header line),
//! Parquet through the `parquet` crate. Synchronous: callers run it on a blocking thread.
//!
//! CSV types are inferred as a user expects: a column is a number column when its first
//! present cell is a number (every later present cell must then be one too: a cell that is
//! not is a 422 naming its line and column), a string column otherwise or when named in
//! `categorical`. Empty cells, and the texts pandas reads as missing (`NA`, `NaN`, `null`,
//! `N/A`, ...), are missing.

use std::{collections::HashSet, io::Read};

use super::{ColumnInfo, ColumnType, DatasetError};

/// Texts read as a missing value (pandas' defaults), after trimming spaces.
const MISSING: &[&[u8]] = &[
    b"",
    b"#N/A",
    b"#N/A N/A",
    b"#NA",
    b"-1.#IND",
    b"-1.#QNAN",
    b"-NaN",
    b"-nan",
    b"1.#IND",
    b"1.#QNAN",
    b"<NA>",
    b"N/A",
    b"NA",
    b"NULL",
    b"NaN",
    b"None",
    b"n/a",
    b"nan",
    b"null",
];

pub fn trim(cell: &[u8]) -> &[u8] {
    cell.trim_ascii()
}

pub fn is_missing(cell: &[u8]) -> bool {
    MISSING.contains(&trim(cell))
}

/// A finite number, or `None`.
pub fn number(cell: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(trim(cell)).ok()?;
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The row count and column types of a CSV stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSummary {
    pub rows: u64,
    pub columns: Vec<ColumnInfo>,
}

fn reader<R: Read>(read: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(read)
}

fn csv_error(error: csv::Error) -> DatasetError {
    let line = error.position().map(csv::Position::line);
    match error.kind() {
        csv::ErrorKind::Io(io) => {
            DatasetError::invalid("body", "syntax", format!("cannot read the body: {io}"))
        }
        _ => DatasetError::invalid(
            line.map_or("body".to_owned(), |l| format!("line {l}")),
            "syntax",
            error.to_string(),
        ),
    }
}

/// The header's names: non-empty and distinct.
fn header<R: Read>(reader: &mut csv::Reader<R>) -> Result<Vec<String>, DatasetError> {
    let names = reader.headers().map_err(csv_error)?.clone();
    let names: Vec<String> = names.iter().map(|n| n.trim().to_owned()).collect();
    if names.is_empty() || names.iter().all(String::is_empty) {
        return Err(DatasetError::invalid(
            "line 1",
            "empty",
            "the CSV needs a header line naming its columns",
        ));
    }
    let mut seen = HashSet::new();
    for (j, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(DatasetError::invalid(
                format!("line 1, column {}", j + 1),
                "invalid",
                "a column has no name in the header line",
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(DatasetError::invalid(
                format!("line 1, column `{name}`"),
                "invalid",
                format!("the header names `{name}` twice"),
            ));
        }
    }
    Ok(names)
}

fn shape_error(line: u64, cells: usize, width: usize) -> DatasetError {
    DatasetError::invalid(
        format!("line {line}"),
        "shape",
        format!("line {line} has {cells} cells; the header has {width}"),
    )
}

/// Reads the whole stream, inferring each column's type and counting rows and missing cells.
pub fn summarize_csv(
    read: impl Read,
    categorical: &HashSet<String>,
) -> Result<CsvSummary, DatasetError> {
    let mut reader = reader(read);
    let names = header(&mut reader)?;
    if let Some(name) = categorical.iter().find(|n| !names.contains(n)) {
        return Err(DatasetError::invalid(
            "categorical",
            "missing",
            format!("`{name}` is not a column of the CSV header"),
        ));
    }
    // None: no present cell yet.
    let mut kinds: Vec<Option<(ColumnType, u64)>> = names
        .iter()
        .map(|n| categorical.contains(n).then_some((ColumnType::String, 1)))
        .collect();
    let mut missing = vec![0u64; names.len()];
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    while reader.read_byte_record(&mut record).map_err(csv_error)? {
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() != names.len() {
            if record.len() == 1 && record.get(0).is_some_and(|c| c.is_empty()) {
                continue; // a blank line
            }
            return Err(shape_error(line, record.len(), names.len()));
        }
        rows += 1;
        for (j, cell) in record.iter().enumerate() {
            if is_missing(cell) {
                if let Some(m) = missing.get_mut(j) {
                    *m += 1;
                }
                continue;
            }
            let Some(kind) = kinds.get_mut(j) else {
                continue;
            };
            match kind {
                None => {
                    let inferred = match number(cell) {
                        Some(_) => ColumnType::Number,
                        None => ColumnType::String,
                    };
                    *kind = Some((inferred, line));
                }
                Some((ColumnType::Number, first)) => {
                    if number(cell).is_none() {
                        let name = names.get(j).map_or("", String::as_str);
                        let shown = String::from_utf8_lossy(trim(cell));
                        return Err(DatasetError::invalid(
                            format!("line {line}, column `{name}`"),
                            "type",
                            format!(
                                "line {line}, column `{name}`: `{shown}` is not a finite number, \
                                 as the column's first value (line {first}) is; to read the \
                                 column as text, send `?categorical={name}`"
                            ),
                        ));
                    }
                }
                Some((ColumnType::String, _)) => {}
            }
            if std::str::from_utf8(cell).is_err() {
                let name = names.get(j).map_or("", String::as_str);
                return Err(DatasetError::invalid(
                    format!("line {line}, column `{name}`"),
                    "encoding",
                    format!("line {line}, column `{name}` is not UTF-8 text"),
                ));
            }
        }
    }
    if rows == 0 {
        return Err(DatasetError::invalid(
            "body",
            "empty",
            "the CSV needs a header line and at least one row",
        ));
    }
    let columns = names
        .into_iter()
        .zip(kinds)
        .zip(missing)
        .map(|((name, kind), missing)| ColumnInfo {
            name,
            // A column with no present cell reads as numbers (all missing).
            kind: kind.map_or(ColumnType::Number, |(k, _)| k),
            missing,
        })
        .collect();
    Ok(CsvSummary { rows, columns })
}

/// One column read for training.
#[derive(Debug, Clone, PartialEq)]
pub enum Cells {
    /// Missing cells are NaN.
    Numbers(Vec<f64>),
    /// Trimmed text; a missing cell is `""`.
    Texts(Vec<String>),
}

/// Reads the columns `wanted` (name, type) of a CSV stream, calling `rows_read` every 65,536
/// rows. The stream is the one that was summarised, so types hold; a cell that breaks them
/// (the object changed in storage) is an error naming it.
pub fn read_csv_columns(
    read: impl Read,
    wanted: &[(String, ColumnType)],
    rows_hint: usize,
    rows_read: &mut dyn FnMut(u64),
) -> Result<Vec<Cells>, DatasetError> {
    let mut reader = reader(read);
    let names = header(&mut reader)?;
    let mut index = Vec::with_capacity(wanted.len());
    let mut out = Vec::with_capacity(wanted.len());
    for (name, kind) in wanted {
        let j = names.iter().position(|n| n == name).ok_or_else(|| {
            DatasetError::invalid(name.clone(), "missing", "not a column of the data set")
        })?;
        index.push(j);
        out.push(match kind {
            ColumnType::Number => Cells::Numbers(Vec::with_capacity(rows_hint)),
            ColumnType::String => Cells::Texts(Vec::with_capacity(rows_hint)),
        });
    }
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    while reader.read_byte_record(&mut record).map_err(csv_error)? {
        if record.len() != names.len() {
            if record.len() == 1 && record.get(0).is_some_and(|c| c.is_empty()) {
                continue;
            }
            let line = record.position().map_or(0, csv::Position::line);
            return Err(shape_error(line, record.len(), names.len()));
        }
        for (&j, column) in index.iter().zip(out.iter_mut()) {
            let cell = record.get(j).unwrap_or_default();
            match column {
                Cells::Numbers(values) => {
                    let value = if is_missing(cell) {
                        f64::NAN
                    } else {
                        number(cell).ok_or_else(|| {
                            let line = record.position().map_or(0, csv::Position::line);
                            DatasetError::invalid(
                                format!("line {line}, column `{}`", names[j]),
                                "type",
                                "not a finite number (the stored data set changed?)",
                            )
                        })?
                    };
                    values.push(value);
                }
                Cells::Texts(values) => values.push(if is_missing(cell) {
                    String::new()
                } else {
                    String::from_utf8_lossy(trim(cell)).into_owned()
                }),
            }
        }
        rows += 1;
        if rows % 65_536 == 0 {
            rows_read(rows);
        }
    }
    rows_read(rows);
    Ok(out)
}

pub mod parquet_file {
    //! Parquet: the summary comes from the footer alone (the upload is streamed to storage,
    //! then its last bytes are read back); the worker reads the columns it needs.

    use bytes::Bytes;
    use parquet::{
        basic::{ConvertedType, LogicalType, Type as PhysicalType},
        file::{
            metadata::{ParquetMetaData, ParquetMetaDataReader},
            reader::{FileReader, SerializedFileReader},
        },
        record::Field,
    };

    use super::{Cells, ColumnInfo, ColumnType, DatasetError};

    /// Parquet files end with the footer's length (4 bytes LE) and `PAR1`.
    pub fn footer_length(tail: &[u8]) -> Result<u64, DatasetError> {
        match tail {
            [a, b, c, d, b'P', b'A', b'R', b'1'] => {
                Ok(u64::from(u32::from_le_bytes([*a, *b, *c, *d])))
            }
            _ => Err(not_parquet(
                "the body does not end with Parquet's `PAR1` footer",
            )),
        }
    }

    fn not_parquet(message: impl Into<String>) -> DatasetError {
        DatasetError::invalid("body", "format", message)
    }

    pub fn decode_footer(footer: &[u8]) -> Result<ParquetMetaData, DatasetError> {
        ParquetMetaDataReader::decode_metadata(footer)
            .map_err(|e| not_parquet(format!("the Parquet footer cannot be read: {e}")))
    }

    /// Rows and typed columns; a column ml-api cannot train on (nested, binary, dates...) is
    /// refused by name.
    pub fn summarize(metadata: &ParquetMetaData) -> Result<(u64, Vec<ColumnInfo>), DatasetError> {
        let schema = metadata.file_metadata().schema_descr();
        let mut columns = Vec::new();
        for (j, column) in schema.columns().iter().enumerate() {
            let name = column.path().string();
            if column.max_rep_level() > 0 || column.path().parts().len() > 1 {
                return Err(DatasetError::invalid(
                    format!("column `{name}`"),
                    "type",
                    format!("column `{name}` is nested or repeated; ml-api reads flat columns"),
                ));
            }
            let text = matches!(column.logical_type_ref(), Some(LogicalType::String))
                || column.converted_type() == ConvertedType::UTF8;
            let kind = match column.physical_type() {
                PhysicalType::BOOLEAN
                | PhysicalType::INT32
                | PhysicalType::INT64
                | PhysicalType::FLOAT
                | PhysicalType::DOUBLE => ColumnType::Number,
                PhysicalType::BYTE_ARRAY if text => ColumnType::String,
                other => {
                    return Err(DatasetError::invalid(
                        format!("column `{name}`"),
                        "type",
                        format!(
                            "column `{name}` is {other} without a string type; ml-api reads \
                             numbers, booleans and strings"
                        ),
                    ))
                }
            };
            let missing = metadata
                .row_groups()
                .iter()
                .filter_map(|g| g.column(j).statistics().and_then(|s| s.null_count_opt()))
                .sum();
            columns.push(ColumnInfo {
                name,
                kind,
                missing,
            });
        }
        let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
        Ok((rows, columns))
    }

    /// Reads the columns `wanted` (by name, in that order) from the file's bytes.
    pub fn read_columns(
        bytes: Bytes,
        wanted: &[(String, ColumnType)],
        rows_read: &mut dyn FnMut(u64),
    ) -> Result<Vec<Cells>, DatasetError> {
        let reader = SerializedFileReader::new(bytes)
            .map_err(|e| not_parquet(format!("cannot read the Parquet file: {e}")))?;
        let rows = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
        let mut out: Vec<Cells> = wanted
            .iter()
            .map(|(_, kind)| match kind {
                ColumnType::Number => Cells::Numbers(Vec::with_capacity(rows)),
                ColumnType::String => Cells::Texts(Vec::with_capacity(rows)),
            })
            .collect();
        let iter = reader
            .get_row_iter(None)
            .map_err(|e| not_parquet(e.to_string()))?;
        let mut count = 0u64;
        for row in iter {
            let row = row.map_err(|e| not_parquet(e.to_string()))?;
            for ((name, _), column) in wanted.iter().zip(out.iter_mut()) {
                let field = row
                    .get_column_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| f);
                match column {
                    Cells::Numbers(values) => values.push(match field {
                        Some(Field::Bool(b)) => f64::from(u8::from(*b)),
                        Some(Field::Byte(v)) => f64::from(*v),
                        Some(Field::Short(v)) => f64::from(*v),
                        Some(Field::Int(v)) => f64::from(*v),
                        Some(Field::Long(v)) => *v as f64,
                        Some(Field::UByte(v)) => f64::from(*v),
                        Some(Field::UShort(v)) => f64::from(*v),
                        Some(Field::UInt(v)) => f64::from(*v),
                        Some(Field::ULong(v)) => *v as f64,
                        Some(Field::Float(v)) => f64::from(*v),
                        Some(Field::Double(v)) => *v,
                        _ => f64::NAN,
                    }),
                    Cells::Texts(values) => values.push(match field {
                        Some(Field::Str(s)) => s.trim().to_owned(),
                        _ => String::new(),
                    }),
                }
            }
            count += 1;
            if count % 65_536 == 0 {
                rows_read(count);
            }
        }
        rows_read(count);
        Ok(out)
    }
}
