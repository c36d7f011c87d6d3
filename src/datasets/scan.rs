//! Reading data sets: CSV through the `csv` crate (RFC 4180, any line ends, a header line;
//! blocks without quotes are split by `simd-csv`, see [`super::tokens`]), Parquet through the
//! `parquet` crate. Synchronous: callers run it on a blocking thread.
//!
//! CSV types are inferred as a user expects: a column is a number column when its first
//! present cell is a number (every later present cell must then be one too: a cell that is
//! not is a 422 naming its line and column), a string column otherwise or when named in
//! `categorical`. Empty cells, and the texts pandas reads as missing (`NA`, `NaN`, `null`,
//! `N/A`, ...), are missing.

use std::{
    collections::{HashSet, VecDeque},
    io::{BufRead, Read, Write},
    sync::{mpsc, Arc},
};

use super::{
    blocks::{Block, BlockReader},
    columnar::{self, ColumnarWriter, RowGroup},
    tokens::{self, CsvRecords, Records, Split},
    ColumnInfo, ColumnType, DatasetError,
};

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

/// A finite number, or `None`. The whole trimmed cell must be one number, in the forms Rust's
/// `str::parse::<f64>` takes (`1`, `-2.5`, `+.5`, `1e-3`; `fast_float2` parses them to the
/// same, correctly rounded, values several times faster). Plain decimals of at most 15
/// digits (what CSV writers mostly print) take [`short_decimal`] first.
#[inline(always)]
pub fn number(cell: &[u8]) -> Option<f64> {
    let cell = trim(cell);
    match short_decimal(cell) {
        Some(value) => Some(value),
        None => any_number(cell),
    }
}

/// Every other number form, by `fast_float2`. Kept out of line: inlined, its state crowded
/// [`short_decimal`]'s loop out of registers.
#[cold]
#[inline(never)]
fn any_number(cell: &[u8]) -> Option<f64> {
    fast_float2::parse::<f64, _>(cell)
        .ok()
        .filter(|v| v.is_finite())
}

/// Exact powers of ten as `f64` (every one up to 10^22 is).
const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// `[+-]digits[.digits]` with at most 15 digits in all and no exponent, else `None`. Its
/// digits as an integer `w < 10^15 < 2^53` and its fraction's length `f <= 15` are both
/// exact as `f64`, so `w / 10^f` is one correctly rounded IEEE division: the same value as
/// any correct parser's (Clinger's fast path, which `fast_float2` also takes, after more
/// checks per cell). One pass over the bytes: about a fifth less time per cell than
/// `fast_float2` alone on the cells of `make bench-train`, and a quarter less again with the
/// sign taken without a branch and the dot found between two loops.
#[inline(always)]
fn short_decimal(cell: &[u8]) -> Option<f64> {
    // The sign without a branch: half the cells of a centred column are negative.
    let first = cell.first().copied().unwrap_or(0);
    let negative = first == b'-';
    let digits = cell
        .get(usize::from(negative || first == b'+')..)
        .unwrap_or_default();
    if digits.len() > 16 {
        return None;
    }
    // The integer digits, then the fraction's: two loops with no test for the dot inside.
    let mut w: u64 = 0;
    let mut i = 0;
    while let Some(digit) = digits
        .get(i)
        .map(|b| b.wrapping_sub(b'0'))
        .filter(|&d| d <= 9)
    {
        w = w * 10 + u64::from(digit);
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let mut fraction = 0;
    if i < digits.len() {
        if digits.get(i) != Some(&b'.') {
            return None;
        }
        for &byte in digits.get(i + 1..).unwrap_or_default() {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            w = w * 10 + u64::from(digit);
        }
        fraction = digits.len() - i - 1;
    }
    if i + fraction > 15 {
        return None;
    }
    // `w < 10^15`, so through `i64`: one conversion instruction, where `u64 as f64` takes
    // several on x86-64 (about 8 % of the time per cell). Exact either way.
    let value = w as i64 as f64 / POWERS_OF_TEN.get(fraction)?;
    Some(if negative { -value } else { value })
}

/// The row count and column types of a CSV stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSummary {
    pub rows: u64,
    pub columns: Vec<ColumnInfo>,
    /// Whether the Parquet copy of the cells (see [`super::columnar`]) was written whole.
    pub columnar: bool,
}

fn reader<R: Read>(read: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(read)
}

/// A reader of decompressed bytes that stops with [`TooLarge`] past `limit` bytes: a gzip
/// body of a few kilobytes can expand to terabytes.
pub struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Limited<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => Err(std::io::Error::other(TooLarge(self.limit))),
        }
    }
}

/// The decompressed data went past this many bytes.
#[derive(Debug, thiserror::Error)]
#[error(
    "the data set decompresses to more than {0} bytes (the limit is --max-dataset-bytes, \
     ML_API_MAX_DATASET_BYTES, which applies to a gzip body's decompressed size too)"
)]
pub struct TooLarge(pub u64);

fn csv_error(error: csv::Error) -> DatasetError {
    csv_error_at(error, 1)
}

/// A `csv` error in a block that starts on line `first_line` of the stream.
pub(super) fn csv_error_at(error: csv::Error, first_line: u64) -> DatasetError {
    let line = error
        .position()
        .map(|p| first_line + p.line().saturating_sub(1));
    match error.kind() {
        csv::ErrorKind::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref::<TooLarge>()) {
            Some(too_large) => DatasetError::invalid("body", "too_large", too_large.to_string()),
            None => DatasetError::invalid("body", "syntax", format!("cannot read the body: {io}")),
        },
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

/// Each column's type so far and the line of its first present cell (`None`: no present
/// cell yet).
type Kinds = Vec<Option<(ColumnType, u64)>>;

/// The first block is small, so that the columns' types are known early (the blocks after
/// it are parsed in parallel once every column has a type).
const FIRST_BLOCK_RECORDS: usize = 1024;
const FIRST_BLOCK_BYTES: usize = 1 << 20;
/// The most bytes of one block (a block also ends at [`columnar::rows_per_group`] records).
const BLOCK_BYTES: usize = 8 << 20;

/// What a block's rows came to.
struct Parsed {
    group: RowGroup,
    missing: Vec<u64>,
}

fn io_error(io: std::io::Error) -> DatasetError {
    match io.get_ref().and_then(|e| e.downcast_ref::<TooLarge>()) {
        Some(too_large) => DatasetError::invalid("body", "too_large", too_large.to_string()),
        None => DatasetError::invalid("body", "syntax", format!("cannot read the body: {io}")),
    }
}

fn block_reader(bytes: &[u8], headers: bool) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(headers)
        .flexible(true)
        .from_reader(bytes)
}

/// Reads the whole stream, inferring each column's type and counting rows and missing cells;
/// writes the parsed cells as Parquet into `columnar` when given (see [`super::columnar`]).
///
/// The stream is cut into blocks of whole records ([`super::blocks`]). The first block (the
/// header and up to 1,024 rows) is parsed here and gives the columns their types; the blocks
/// after it are parsed on the rayon pool, a few at a time, and taken back in order, so the
/// first bad cell of the stream is the one reported, with its line and column. Until every
/// column has a present cell (and so a type), blocks are parsed here, one after the other.
pub fn summarize_csv(
    read: impl BufRead,
    categorical: &HashSet<String>,
    columnar: Option<Box<dyn Write + Send>>,
) -> Result<CsvSummary, DatasetError> {
    let mut blocks = BlockReader::new(read, FIRST_BLOCK_RECORDS, FIRST_BLOCK_BYTES);
    let first = blocks.next_block().map_err(io_error)?.unwrap_or(Block {
        bytes: Vec::new(),
        first_line: 1,
    });
    let mut reader = block_reader(&first.bytes, true);
    let names = header(&mut reader)?;
    if let Some(name) = categorical.iter().find(|n| !names.contains(n)) {
        return Err(DatasetError::invalid(
            "categorical",
            "missing",
            format!("`{name}` is not a column of the CSV header"),
        ));
    }
    let width = names.len();
    let mut kinds: Kinds = names
        .iter()
        .map(|n| categorical.contains(n).then_some((ColumnType::String, 1)))
        .collect();
    let mut missing = vec![0u64; width];
    let mut rows = 0u64;
    let mut copy = ColumnarWriter::new(&names, columnar);
    let mut take = |parsed: Parsed, copy: &mut ColumnarWriter| {
        rows += parsed.group.rows() as u64;
        for (total, m) in missing.iter_mut().zip(&parsed.missing) {
            *total += m;
        }
        copy.write(parsed.group);
    };
    let group = copy.empty_group(width, FIRST_BLOCK_RECORDS);
    let parsed = parse_rows(
        &mut CsvRecords::new(reader, &first.bytes, 1),
        &names,
        &mut kinds,
        group,
    )?;
    take(parsed, &mut copy);
    drop(first);

    let group_rows = columnar::rows_per_group(width);
    blocks.set_limits(group_rows, BLOCK_BYTES);
    let names: Arc<[String]> = names.into();
    // Blocks on the pool, oldest first: at most one per thread, plus one.
    let most = rayon::current_num_threads() + 1;
    // Each parsed block comes back with its bytes, for the reader to reuse.
    type Done = Result<(Parsed, Vec<u8>), DatasetError>;
    let mut pending: VecDeque<mpsc::Receiver<Done>> = VecDeque::new();
    let mut known: Option<Arc<Kinds>> = None;
    let wait = |receiver: mpsc::Receiver<Done>| {
        receiver
            .recv()
            .map_err(|_| DatasetError::Internal("a CSV block's parser stopped".to_owned()))?
    };
    loop {
        let block = match blocks.next_block() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(error) => {
                // A bad cell before the point where reading failed is the first problem.
                for receiver in pending.drain(..) {
                    wait(receiver)?;
                }
                return Err(io_error(error));
            }
        };
        if known.is_none() && kinds.iter().all(Option::is_some) && copy.schema_fixed() {
            known = Some(Arc::new(kinds.clone()));
        }
        let group = copy.empty_group(width, group_rows);
        match &known {
            Some(known) => {
                let (send, receiver) = mpsc::sync_channel(1);
                let (names, known) = (names.clone(), known.clone());
                rayon::spawn(move || {
                    let mut kinds = Kinds::clone(&known);
                    let parsed = parse_block(&block, &names, &mut kinds, group);
                    let _ = send.send(parsed.map(|parsed| (parsed, block.bytes)));
                });
                pending.push_back(receiver);
                while pending.len() >= most {
                    if let Some(receiver) = pending.pop_front() {
                        let (parsed, bytes) = wait(receiver)?;
                        blocks.recycle(bytes);
                        take(parsed, &mut copy);
                    }
                }
            }
            None => {
                let parsed = parse_block(&block, &names, &mut kinds, group)?;
                blocks.recycle(block.bytes);
                take(parsed, &mut copy);
            }
        }
    }
    for receiver in pending.drain(..) {
        take(wait(receiver)?.0, &mut copy);
    }
    if rows == 0 {
        return Err(DatasetError::invalid(
            "body",
            "empty",
            "the CSV needs a header line and at least one row",
        ));
    }
    let columns: Vec<ColumnInfo> = names
        .iter()
        .zip(kinds)
        .zip(missing)
        .map(|((name, kind), missing)| ColumnInfo {
            name: name.clone(),
            // A column with no present cell reads as numbers (all missing).
            kind: kind.map_or(ColumnType::Number, |(k, _)| k),
            missing,
        })
        .collect();
    let columnar = match copy.finish() {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(%error, "no Parquet copy of the CSV's cells");
            false
        }
    };
    Ok(CsvSummary {
        rows,
        columnar,
        columns,
    })
}

/// Parses the rows of a block after the first into `group` with the faster tokenizer that
/// reads it as the `csv` crate would ([`tokens`]).
fn parse_block(
    block: &Block,
    names: &[String],
    kinds: &mut Kinds,
    group: RowGroup,
) -> Result<Parsed, DatasetError> {
    if tokens::splits_like_csv(&block.bytes) {
        parse_rows(
            &mut Split::new(&block.bytes, block.first_line),
            names,
            kinds,
            group,
        )
    } else {
        let reader = block_reader(&block.bytes, false);
        parse_rows(
            &mut CsvRecords::new(reader, &block.bytes, block.first_line),
            names,
            kinds,
            group,
        )
    }
}

/// Parses the rows of one block into `group`, inferring the type of columns that have none
/// yet.
fn parse_rows(
    records: &mut impl Records,
    names: &[String],
    kinds: &mut Kinds,
    mut group: RowGroup,
) -> Result<Parsed, DatasetError> {
    let mut missing = vec![0u64; names.len()];
    while records.next_record()? {
        if records.width() != names.len() {
            if records.width() == 1 && records.cells().all(<[u8]>::is_empty) {
                continue; // a blank line
            }
            return Err(shape_error(records.line(), records.width(), names.len()));
        }
        // `records.line()` is asked only when an error or a first present cell needs it.
        for ((j, cell), kind) in records.cells().enumerate().zip(kinds.iter_mut()) {
            // The common case first: a number in a number column (ASCII, so valid UTF-8).
            if matches!(kind, Some((ColumnType::Number, _))) {
                if let Some(value) = number(cell) {
                    group.number(j, value);
                    continue;
                }
            }
            if is_missing(cell) {
                if let Some(m) = missing.get_mut(j) {
                    *m += 1;
                }
                group.missing(j);
                continue;
            }
            match kind {
                None => match number(cell) {
                    Some(value) => {
                        *kind = Some((ColumnType::Number, records.line()));
                        group.number(j, value);
                        continue;
                    }
                    None => *kind = Some((ColumnType::String, records.line())),
                },
                Some((ColumnType::Number, first)) => {
                    let (line, name) = (records.line(), names.get(j).map_or("", String::as_str));
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
                Some((ColumnType::String, _)) => {}
            }
            if std::str::from_utf8(cell).is_err() {
                let (line, name) = (records.line(), names.get(j).map_or("", String::as_str));
                return Err(DatasetError::invalid(
                    format!("line {line}, column `{name}`"),
                    "encoding",
                    format!("line {line}, column `{name}` is not UTF-8 text"),
                ));
            }
            group.text(j, trim(cell));
        }
        group.end_row();
    }
    Ok(Parsed { group, missing })
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
                    let value = match number(cell) {
                        Some(value) => value,
                        None if is_missing(cell) => f64::NAN,
                        None => {
                            let line = record.position().map_or(0, csv::Position::line);
                            return Err(DatasetError::invalid(
                                format!("line {line}, column `{}`", names[j]),
                                "type",
                                "not a finite number (the stored data set changed?)",
                            ));
                        }
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
    //! then its last bytes are read back); the worker reads the columns it needs
    //! ([`super::super::columnar`]).

    use parquet::{
        basic::{ConvertedType, LogicalType, Type as PhysicalType},
        file::metadata::{ParquetMetaData, ParquetMetaDataReader},
    };

    use super::{ColumnInfo, ColumnType, DatasetError};

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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `number` must equal: Rust's own parser on the trimmed cell.
    fn by_std(cell: &str) -> Option<u64> {
        cell.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(f64::to_bits)
    }

    #[test]
    fn short_decimals_parse_to_the_same_bits_as_rusts_parser() {
        let fixed = [
            "0",
            "-0",
            "+0",
            "-0.0",
            "5.",
            "-5.",
            "+.5",
            ".5",
            "-.5",
            "1e3",
            "1.5E-7",
            "0.1",
            "0.3",
            "-1.234567",
            "123456789012345",
            "1234567890123456",
            "0.000000000000001",
            "9.99999999999999",
            "999999999999999.",
            "00000000000000012",
            " 2.5 ",
            "1.2.3",
            "-",
            "+",
            ".",
            "-.",
            "1,5",
            "1_0",
            "nan",
            "inf",
            "0x10",
            "١",
            "",
            "12a",
            "--1",
        ];
        for cell in fixed {
            assert_eq!(
                number(cell.as_bytes()).map(f64::to_bits),
                by_std(cell),
                "`{cell}`"
            );
        }
        // Random decimals as CSV writers print them: every digit count and dot position.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..200_000 {
            let digits = 1 + next(17) as usize;
            let mut cell = String::new();
            match next(3) {
                0 => cell.push('-'),
                1 if next(4) == 0 => cell.push('+'),
                _ => {}
            }
            let dot = next(digits as u64 + 1) as usize;
            for i in 0..digits {
                if i == dot && i > 0 {
                    cell.push('.');
                }
                cell.push(char::from(b'0' + next(10) as u8));
            }
            assert_eq!(
                number(cell.as_bytes()).map(f64::to_bits),
                by_std(&cell),
                "`{cell}`"
            );
        }
    }
}
