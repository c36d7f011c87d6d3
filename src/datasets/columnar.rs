//! Parquet columns: the file of a CSV upload's parsed cells, which is what the dataset store
//! keeps of a CSV (training reads it instead of parsing text again), and the column reader
//! for every Parquet file (uploaded or written here).
//!
//! While `POST /datasets` parses a CSV (to infer types and find bad rows) it puts the cells
//! of each block of records it parses (see [`super::blocks`]; blocks are parsed on several
//! threads) into a [`RowGroup`]: numbers as `DOUBLE`, text as UTF-8 `BYTE_ARRAY`, missing
//! cells as nulls, at most [`rows_per_group`] rows. A [`ColumnarWriter`] takes the groups in
//! order and encodes them on a thread of its own while the parser reads on (the server holds
//! a few row groups, never the data set). The schema is fixed at the first row group; a
//! column with no present cell by then is written as text, so whatever comes later fits: if
//! it turns out to hold numbers, they are stored as their shortest round-trip text and read
//! back as numbers ([`read_group`]).
//!
//! Training fetches the byte ranges of a few row groups at a time and decodes the columns it
//! needs with Parquet's column readers, one row group per rayon task, each into its own rows
//! of the columns (no per-row values, no per-cell parsing).

use std::{
    io::Write,
    sync::{mpsc, Arc},
};

use bytes::{Buf, Bytes};
use parquet::{
    basic::{ConvertedType, LogicalType, Repetition, Type as PhysicalType},
    column::reader::{ColumnReader, ColumnReaderImpl},
    data_type::{ByteArray, ByteArrayType, DataType, DoubleType},
    errors::ParquetError,
    file::{
        metadata::{ParquetMetaData, RowGroupMetaData},
        properties::{EnabledStatistics, ReaderProperties, WriterProperties},
        reader::{ChunkReader, Length, RowGroupReader},
        serialized_reader::SerializedRowGroupReader,
        writer::SerializedFileWriter,
    },
    schema::types::{ColumnDescriptor, Type},
};

use super::{scan::Cells, ColumnType, DatasetError};

/// Rows per row group for `width` columns: about half a million cells (4 MiB of numbers).
/// The CSV parser reads a block of at most this many records at a time (see
/// [`super::blocks`]), and each block becomes one row group.
pub fn rows_per_group(width: usize) -> usize {
    ((1usize << 19) / width.max(1)).clamp(1024, 1 << 16)
}

/// One column's cells of a row group.
enum Buffer {
    /// No present cell yet (only before the schema is fixed).
    Pending,
    Numbers(Vec<f64>),
    Texts(Vec<ByteArray>),
}

/// The cells of one row group, filled by the CSV parser (one block of rows; blocks are
/// parsed on several threads) and handed to a [`ColumnarWriter`] in order.
pub struct RowGroup {
    buffers: Vec<Buffer>,
    /// Definition levels (1 present, 0 missing) per column, from its first missing cell on:
    /// empty while every cell of the column is present (most columns of most data sets), so
    /// a present cell costs one push, not two.
    defs: Vec<Vec<i16>>,
    rows: usize,
    /// A cell did not fit the layout: the copy cannot be completed.
    broken: bool,
}

impl RowGroup {
    /// An empty group of `width` columns laid out as `schema` (`None`: not fixed yet, each
    /// column takes the type of its first present cell), with room for `rows` rows.
    pub fn new(width: usize, schema: Option<&[ColumnType]>, rows: usize) -> Self {
        let buffers = match schema {
            Some(schema) => schema
                .iter()
                .map(|kind| match kind {
                    ColumnType::Number => Buffer::Numbers(Vec::with_capacity(rows)),
                    ColumnType::String => Buffer::Texts(Vec::new()),
                })
                .collect(),
            None => (0..width).map(|_| Buffer::Pending).collect(),
        };
        Self {
            buffers,
            defs: (0..width).map(|_| Vec::new()).collect(),
            rows: 0,
            broken: false,
        }
    }

    /// Whether this (emptied) group has the layout of `schema`.
    fn fits(&self, schema: &[ColumnType]) -> bool {
        self.rows == 0
            && self.buffers.len() == schema.len()
            && self.buffers.iter().zip(schema).all(|(b, k)| {
                matches!(
                    (b, k),
                    (Buffer::Numbers(_), ColumnType::Number)
                        | (Buffer::Texts(_), ColumnType::String)
                )
            })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline(always)]
    pub fn number(&mut self, column: usize, value: f64) {
        match self.buffers.get_mut(column) {
            Some(Buffer::Numbers(values)) => values.push(value),
            // Declared as text (no present cell in the first row group): its shortest
            // round-trip text, read back as this very number.
            Some(Buffer::Texts(values)) => {
                values.push(ByteArray::from(value.to_string().into_bytes()))
            }
            Some(buffer @ Buffer::Pending) => {
                let mut values = Vec::with_capacity(1024);
                values.push(value);
                *buffer = Buffer::Numbers(values);
            }
            None => return,
        }
        self.present(column);
    }

    pub fn text(&mut self, column: usize, text: &[u8]) {
        match self.buffers.get_mut(column) {
            Some(Buffer::Texts(values)) => values.push(ByteArray::from(text.to_vec())),
            Some(buffer @ Buffer::Pending) => {
                *buffer = Buffer::Texts(vec![ByteArray::from(text.to_vec())]);
            }
            // The parser refuses text in a number column before it gets here.
            _ => {
                self.broken = true;
                return;
            }
        }
        self.present(column);
    }

    /// A present cell's level, once the column has levels.
    #[inline(always)]
    fn present(&mut self, column: usize) {
        if let Some(defs) = self.defs.get_mut(column).filter(|d| !d.is_empty()) {
            defs.push(1);
        }
    }

    pub fn missing(&mut self, column: usize) {
        if let Some(defs) = self.defs.get_mut(column) {
            // The column's cells so far (one per finished row) were all present.
            defs.resize(defs.len().max(self.rows), 1);
            defs.push(0);
        }
    }

    pub fn end_row(&mut self) {
        self.rows += 1;
    }
}

enum Message {
    /// The schema, fixed by the first row group (sent before it).
    Start(Vec<ColumnType>),
    Group(RowGroup),
}

/// The encoding thread's side: its inbox, the emptied groups it returns, its result.
struct Encoder {
    groups: mpsc::SyncSender<Message>,
    emptied: mpsc::Receiver<RowGroup>,
    thread: std::thread::JoinHandle<Result<(), ParquetError>>,
}

/// Writes the row groups of a CSV's cells, in order, as Parquet into a sink (encoded on a
/// thread of its own).
pub struct ColumnarWriter {
    /// `None`: writes nothing.
    encoder: Option<Encoder>,
    /// The type each column is written with (fixed by the first row group; empty before).
    schema: Vec<ColumnType>,
    /// Set when the copy cannot be completed; later groups are dropped.
    failed: bool,
}

impl ColumnarWriter {
    /// `None` sink: a writer that writes nothing (and reports no copy).
    pub fn new(names: &[String], sink: Option<Box<dyn Write + Send>>) -> Self {
        let encoder = sink.and_then(|sink| {
            let (groups, inbox) = mpsc::sync_channel(1);
            let (give_back, emptied) = mpsc::sync_channel(4);
            let names = names.to_vec();
            std::thread::Builder::new()
                .name("dataset-parquet".to_owned())
                .spawn(move || encode(sink, &names, &inbox, &give_back))
                .map_err(|error| tracing::warn!(%error, "cannot start a Parquet encoder"))
                .ok()
                .map(|thread| Encoder {
                    groups,
                    emptied,
                    thread,
                })
        });
        Self {
            failed: encoder.is_none(),
            encoder,
            schema: Vec::new(),
        }
    }

    /// The columns' types in the file (`None` until the first row group is written).
    pub fn schema(&self) -> Option<&[ColumnType]> {
        (!self.schema.is_empty()).then_some(self.schema.as_slice())
    }

    /// Whether a row group can be laid out without the first one: the schema is fixed, or
    /// nothing is written.
    pub fn schema_fixed(&self) -> bool {
        self.failed || !self.schema.is_empty()
    }

    /// An empty group laid out as the schema, reusing one the encoder is done with when
    /// there is one (its buffers are already paged in).
    pub fn empty_group(&self, width: usize, rows: usize) -> RowGroup {
        let schema = self.schema();
        if let (Some(encoder), Some(schema)) = (&self.encoder, schema) {
            if let Some(group) = encoder.emptied.try_iter().find(|g| g.fits(schema)) {
                return group;
            }
        }
        RowGroup::new(width, schema, rows)
    }

    /// Sends a row group to the encoding thread (the schema first, with the first group
    /// holding rows). A group must be laid out as the schema once it is fixed.
    pub fn write(&mut self, group: RowGroup) {
        if group.broken {
            self.failed = true;
        }
        if self.failed || group.rows == 0 {
            return;
        }
        let Some(encoder) = &self.encoder else {
            return;
        };
        if self.schema.is_empty() {
            self.schema = group
                .buffers
                .iter()
                .map(|b| match b {
                    Buffer::Numbers(_) => ColumnType::Number,
                    Buffer::Texts(_) | Buffer::Pending => ColumnType::String,
                })
                .collect();
            if encoder
                .groups
                .send(Message::Start(self.schema.clone()))
                .is_err()
            {
                self.failed = true;
                return;
            }
        }
        if encoder.groups.send(Message::Group(group)).is_err() {
            self.failed = true;
        }
    }

    /// Writes the footer and waits for the encoding thread. `Ok` when the copy is
    /// complete: every column is readable with the types the upload inferred (a number
    /// column written as text reads back as numbers).
    pub fn finish(mut self) -> Result<(), String> {
        if self.failed {
            return Err("the Parquet encoder stopped".to_owned());
        }
        if self.schema.is_empty() {
            return Err("no rows".to_owned());
        }
        let Some(Encoder {
            groups,
            emptied,
            thread,
        }) = self.encoder.take()
        else {
            return Err("no Parquet sink".to_owned());
        };
        drop(groups);
        drop(emptied);
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the Parquet encoder crashed".to_owned()),
        }
    }
}

/// The encoding thread: the schema, then row groups until the parser is done.
fn encode(
    sink: Box<dyn Write + Send>,
    names: &[String],
    inbox: &mpsc::Receiver<Message>,
    give_back: &mpsc::SyncSender<RowGroup>,
) -> Result<(), ParquetError> {
    let schema = match inbox.recv() {
        Ok(Message::Start(schema)) => schema,
        _ => return Err(ParquetError::General("no rows".into())),
    };
    let fields = names
        .iter()
        .zip(&schema)
        .map(|(name, kind)| {
            let field = match kind {
                ColumnType::Number => Type::primitive_type_builder(name, PhysicalType::DOUBLE),
                ColumnType::String => Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
                    .with_logical_type(Some(LogicalType::String)),
            };
            field
                .with_repetition(Repetition::OPTIONAL)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let parquet_schema = Type::group_type_builder("schema")
        .with_fields(fields)
        .build()?;
    let properties = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .build();
    let mut file = SerializedFileWriter::new(sink, Arc::new(parquet_schema), Arc::new(properties))?;
    // The levels of a column with no missing cell in a group.
    let mut all_present: Vec<i16> = Vec::new();
    while let Ok(message) = inbox.recv() {
        let Message::Group(mut group) = message else {
            return Err(ParquetError::General("the schema was sent twice".into()));
        };
        let mut writer = file.next_row_group()?;
        if all_present.len() < group.rows {
            all_present.resize(group.rows, 1);
        }
        for ((buffer, defs), kind) in group.buffers.iter_mut().zip(&mut group.defs).zip(&schema) {
            let mut column = writer
                .next_column()?
                .ok_or_else(|| ParquetError::General("fewer columns than the schema".into()))?;
            let levels = Some(match defs.is_empty() {
                true => all_present.get(..group.rows).unwrap_or_default(),
                false => defs.as_slice(),
            });
            match (&mut *buffer, kind) {
                (Buffer::Numbers(values), ColumnType::Number) => {
                    column
                        .typed::<DoubleType>()
                        .write_batch(values, levels, None)?;
                    values.clear();
                }
                (Buffer::Texts(values), ColumnType::String) => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(values, levels, None)?;
                    values.clear();
                }
                // No present cell in the first row group: a text column of nulls so far.
                (Buffer::Pending, ColumnType::String) => {
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&[], levels, None)?;
                    *buffer = Buffer::Texts(Vec::new());
                }
                _ => return Err(ParquetError::General("a column changed type".into())),
            }
            column.close()?;
            defs.clear();
        }
        group.rows = 0;
        writer.close()?;
        // Emptied buffers go back for reuse (dropped when the parser has enough).
        let _ = give_back.try_send(group);
    }
    file.close()?;
    Ok(())
}

/// A byte range of a Parquet file (one row group's column chunks), addressed by file offsets.
struct Range {
    start: u64,
    bytes: Bytes,
}

impl Length for Range {
    fn len(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

impl Range {
    /// `length` bytes at file offset `start` (`None`: to the end of the range).
    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s <= self.bytes.len())
            .ok_or_else(|| ParquetError::EOF(format!("offset {start} outside the range read")))?;
        let to = length.map_or(Some(self.bytes.len()), |l| from.checked_add(l));
        match to {
            Some(to) if to <= self.bytes.len() => Ok(self.bytes.slice(from..to)),
            _ => Err(ParquetError::EOF(format!(
                "{length:?} bytes at {start} run past the range read"
            ))),
        }
    }
}

impl ChunkReader for Range {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// The leaf index of each wanted column (by name, in `wanted` order).
pub fn column_indices(
    metadata: &ParquetMetaData,
    wanted: &[(String, ColumnType)],
) -> Result<Vec<usize>, DatasetError> {
    let schema = metadata.file_metadata().schema_descr();
    wanted
        .iter()
        .map(|(name, _)| {
            schema
                .columns()
                .iter()
                .position(|c| c.path().string() == *name)
                .ok_or_else(|| {
                    DatasetError::invalid(name.clone(), "missing", "not a column of the data set")
                })
        })
        .collect()
}

/// The byte range holding row group `group`'s chunks of `columns`.
pub fn group_range(group: &RowGroupMetaData, columns: &[usize]) -> std::ops::Range<u64> {
    let mut start = u64::MAX;
    let mut end = 0;
    for &j in columns {
        if let Some(chunk) = group.columns().get(j) {
            let (from, length) = chunk.byte_range();
            start = start.min(from);
            end = end.max(from + length);
        }
    }
    start.min(end)..end
}

/// Where one row group's values of one column go: its rows' part of the column.
pub enum Slot<'a> {
    Numbers(&'a mut [f64]),
    Texts(&'a mut [String]),
}

/// Decodes row group `group`'s values of `columns` (whose bytes are `bytes`, at file offset
/// `start`) into `out`, one slot per column as long as the group (missing numbers as NaN,
/// missing texts as `""`).
pub fn read_group(
    metadata: &ParquetMetaData,
    group: usize,
    start: u64,
    bytes: Bytes,
    columns: &[usize],
    out: &mut [Slot<'_>],
) -> Result<(), DatasetError> {
    let broken = |e: ParquetError| {
        DatasetError::invalid(
            "body",
            "format",
            format!("cannot read the Parquet file: {e}"),
        )
    };
    let meta = metadata
        .row_groups()
        .get(group)
        .ok_or_else(|| DatasetError::Internal(format!("no row group {group}")))?;
    let rows = usize::try_from(meta.num_rows()).unwrap_or(0);
    let reader = SerializedRowGroupReader::new(
        Arc::new(Range { start, bytes }),
        meta,
        None,
        Arc::new(ReaderProperties::builder().build()),
    )
    .map_err(broken)?;
    let schema = metadata.file_metadata().schema_descr();
    let short = |name: &str| {
        broken(ParquetError::General(format!(
            "column `{name}` has fewer values than row group {group} has rows"
        )))
    };
    for (&j, slot) in columns.iter().zip(out.iter_mut()) {
        let descr = schema.column(j);
        let column = reader.get_column_reader(j).map_err(broken)?;
        match (column, slot) {
            (ColumnReader::ByteArrayColumnReader(mut r), Slot::Texts(texts)) => {
                let (values, defs) = read_all(&mut r, rows).map_err(broken)?;
                let mut values = values.into_iter();
                if texts.len() != rows {
                    return Err(short(descr.name()));
                }
                for (text, present) in texts.iter_mut().zip(present(&defs, rows, &descr)) {
                    *text = match present.then(|| values.next()).flatten() {
                        Some(v) => String::from_utf8_lossy(v.data().trim_ascii()).into_owned(),
                        None => String::new(),
                    };
                }
            }
            (column, Slot::Numbers(numbers)) => {
                let unsigned = matches!(
                    descr.converted_type(),
                    ConvertedType::UINT_8
                        | ConvertedType::UINT_16
                        | ConvertedType::UINT_32
                        | ConvertedType::UINT_64
                ) || matches!(
                    descr.logical_type_ref(),
                    Some(LogicalType::Integer(int)) if !int.is_signed
                );
                let (values, defs): (Vec<f64>, Vec<i16>) = match column {
                    ColumnReader::DoubleColumnReader(mut r) => read_all(&mut r, rows),
                    ColumnReader::FloatColumnReader(mut r) => read_all(&mut r, rows)
                        .map(|(v, d)| (v.into_iter().map(f64::from).collect(), d)),
                    ColumnReader::Int32ColumnReader(mut r) => {
                        read_all(&mut r, rows).map(|(v, d)| {
                            let v = v.into_iter();
                            (
                                if unsigned {
                                    v.map(|x| f64::from(x as u32)).collect()
                                } else {
                                    v.map(f64::from).collect()
                                },
                                d,
                            )
                        })
                    }
                    ColumnReader::Int64ColumnReader(mut r) => {
                        read_all(&mut r, rows).map(|(v, d)| {
                            let v = v.into_iter();
                            (
                                if unsigned {
                                    v.map(|x| x as u64 as f64).collect()
                                } else {
                                    v.map(|x| x as f64).collect()
                                },
                                d,
                            )
                        })
                    }
                    ColumnReader::BoolColumnReader(mut r) => read_all(&mut r, rows)
                        .map(|(v, d)| (v.into_iter().map(|b| f64::from(u8::from(b))).collect(), d)),
                    // A CSV column with no value in its first row group, which held numbers
                    // later (see the module's documentation).
                    ColumnReader::ByteArrayColumnReader(mut r) => {
                        read_all(&mut r, rows).and_then(|(v, d)| {
                            let numbers = v
                                .iter()
                                .map(|text| super::scan::number(text.data()))
                                .collect::<Option<Vec<f64>>>()
                                .ok_or_else(|| {
                                    ParquetError::General(format!(
                                        "column `{}` holds text that is not a number",
                                        descr.name()
                                    ))
                                })?;
                            Ok((numbers, d))
                        })
                    }
                    _ => Err(ParquetError::General(format!(
                        "column `{}` is not a number column",
                        descr.name()
                    ))),
                }
                .map_err(broken)?;
                if numbers.len() != rows {
                    return Err(short(descr.name()));
                }
                if defs.is_empty() || values.len() == rows {
                    // Every row present (always so for a required column): as read.
                    let values = values.get(..rows).ok_or_else(|| short(descr.name()))?;
                    numbers.copy_from_slice(values);
                } else {
                    let mut values = values.into_iter();
                    for (number, present) in numbers.iter_mut().zip(present(&defs, rows, &descr)) {
                        *number = present.then(|| values.next()).flatten().unwrap_or(f64::NAN);
                    }
                }
            }
            (_, Slot::Texts(_)) => {
                return Err(DatasetError::invalid(
                    format!("column `{}`", descr.name()),
                    "type",
                    "not a string column",
                ))
            }
        }
    }
    Ok(())
}

/// Whether each of `rows` rows holds a value (all do when the column is required).
fn present<'a>(
    defs: &'a [i16],
    rows: usize,
    descr: &ColumnDescriptor,
) -> impl Iterator<Item = bool> + 'a {
    let max = descr.max_def_level();
    (0..rows).map(move |i| max == 0 || defs.get(i).is_some_and(|&d| d == max))
}

/// All values of a column chunk and, for an optional column, its definition levels.
#[allow(clippy::type_complexity)]
fn read_all<T: DataType>(
    reader: &mut ColumnReaderImpl<T>,
    rows: usize,
) -> Result<(Vec<T::T>, Vec<i16>), ParquetError> {
    let mut values = Vec::with_capacity(rows);
    let mut defs = Vec::with_capacity(rows);
    let mut read = 0;
    while read < rows {
        let (records, _, _) =
            reader.read_records(rows - read, Some(&mut defs), None, &mut values)?;
        if records == 0 {
            break;
        }
        read += records;
    }
    Ok((values, defs))
}

/// The columns `wanted` of a whole Parquet file in memory (`_rows` was a capacity hint: the
/// row groups' counts size the columns now).
pub fn read_bytes(
    bytes: Bytes,
    wanted: &[(String, ColumnType)],
    _rows: usize,
) -> Result<Vec<Cells>, DatasetError> {
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&bytes)
        .map_err(|e| {
            DatasetError::invalid(
                "body",
                "format",
                format!("cannot read the Parquet file: {e}"),
            )
        })?;
    let columns = column_indices(&metadata, wanted)?;
    let groups = 0..metadata.num_row_groups();
    let mut out = filled_cells(wanted, total_rows(&metadata));
    let fetched = groups.clone().map(|_| (0, bytes.clone())).collect();
    read_groups(&metadata, groups, fetched, &columns, &mut out)?;
    Ok(out)
}

/// The rows of each row group.
fn group_rows(metadata: &ParquetMetaData) -> impl Iterator<Item = usize> + '_ {
    metadata
        .row_groups()
        .iter()
        .map(|g| usize::try_from(g.num_rows()).unwrap_or(0))
}

/// The rows of the file (the sum over its row groups).
pub fn total_rows(metadata: &ParquetMetaData) -> usize {
    group_rows(metadata).sum()
}

/// Decodes row groups `groups` (their bytes in `fetched`: file offset and bytes, one per
/// group) into their rows of `out`, whose columns are as long as the file: one rayon task per
/// row group, each writing its own rows.
pub fn read_groups(
    metadata: &ParquetMetaData,
    groups: std::ops::Range<usize>,
    fetched: Vec<(u64, Bytes)>,
    columns: &[usize],
    out: &mut [Cells],
) -> Result<(), DatasetError> {
    use rayon::prelude::*;
    let sizes: Vec<usize> = group_rows(metadata).collect();
    let from: usize = sizes.iter().take(groups.start).sum();
    let lengths = sizes.get(groups.clone()).unwrap_or_default();
    let outside = || DatasetError::Internal("a row group lies outside the columns read".into());
    let mut slots: Vec<Vec<Slot<'_>>> = lengths.iter().map(|_| Vec::new()).collect();
    /// Cuts one column's cells from `from` into one slice per row group, in order.
    fn cut<'c, T>(
        values: &'c mut [T],
        from: usize,
        lengths: &[usize],
        slots: &mut [Vec<Slot<'c>>],
        slot: fn(&'c mut [T]) -> Slot<'c>,
    ) -> Option<()> {
        let mut rest = values.get_mut(from..)?;
        for (&length, slots) in lengths.iter().zip(slots) {
            if rest.len() < length {
                return None;
            }
            let (mine, after) = std::mem::take(&mut rest).split_at_mut(length);
            slots.push(slot(mine));
            rest = after;
        }
        Some(())
    }
    for cells in out.iter_mut() {
        match cells {
            Cells::Numbers(values) => cut(values, from, lengths, &mut slots, Slot::Numbers),
            Cells::Texts(values) => cut(values, from, lengths, &mut slots, Slot::Texts),
        }
        .ok_or_else(outside)?;
    }
    slots.into_par_iter().zip(fetched).zip(groups).try_for_each(
        |((mut slots, (start, bytes)), group)| {
            read_group(metadata, group, start, bytes, columns, &mut slots)
        },
    )
}

/// One column per wanted column, `rows` cells long (NaN or `""` until read).
pub fn filled_cells(wanted: &[(String, ColumnType)], rows: usize) -> Vec<Cells> {
    use rayon::prelude::*;
    // Filled on all cores: each column is fresh memory, faulted in page by page as it is filled.
    wanted
        .par_iter()
        .map(|(_, kind)| match kind {
            ColumnType::Number => Cells::Numbers(vec![f64::NAN; rows]),
            ColumnType::String => Cells::Texts(vec![String::new(); rows]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{datasets::scan, test_support::SharedBuffer};

    fn copy_of(csv: &str) -> (scan::CsvSummary, Bytes) {
        let sink = SharedBuffer::default();
        let summary = scan::summarize_csv(
            csv.as_bytes(),
            &Default::default(),
            Some(Box::new(sink.clone())),
        )
        .unwrap();
        let bytes = Bytes::from(sink.bytes());
        (summary, bytes)
    }

    fn wanted(summary: &scan::CsvSummary) -> Vec<(String, ColumnType)> {
        summary
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.kind))
            .collect()
    }

    #[test]
    fn the_copy_reads_back_as_the_csv_does_across_row_groups() {
        let width = 3;
        let rows = rows_per_group(width) * 2 + 7;
        let mut csv = String::from("x,colour,y\n");
        for i in 0..rows {
            let x = if i % 10 == 3 {
                "NA".to_owned()
            } else {
                format!("{}.25", i)
            };
            let colour = if i % 7 == 0 {
                ""
            } else if i % 2 == 0 {
                " red"
            } else {
                "blue"
            };
            csv.push_str(&format!("{x},{colour},{}\n", i % 3));
        }
        let (summary, bytes) = copy_of(&csv);
        assert!(summary.columnar, "the copy is complete");
        let wanted = wanted(&summary);
        let from_copy = read_bytes(bytes, &wanted, rows).unwrap();
        let from_csv = scan::read_csv_columns(csv.as_bytes(), &wanted, rows, &mut |_| {}).unwrap();
        // NaN != NaN: compare the missing cells' positions and the rest.
        match (&from_copy[0], &from_csv[0]) {
            (Cells::Numbers(a), Cells::Numbers(b)) => {
                assert_eq!(a.len(), rows);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b));
                assert!(a[3].is_nan());
            }
            other => panic!("x read as {other:?}"),
        }
        assert_eq!(from_copy[1..], from_csv[1..]);
        let Cells::Texts(colours) = &from_copy[1] else {
            panic!("{:?}", from_copy[1])
        };
        assert_eq!((colours[0].as_str(), colours[2].as_str()), ("", "red"));
    }

    #[test]
    fn a_column_with_no_value_in_the_first_row_group_is_kept_whatever_comes_later() {
        let rows = rows_per_group(2) + 5;
        let mut csv = String::from("late,y\n");
        for i in 0..rows {
            let late = if i + 1 == rows { "text" } else { "" };
            csv.push_str(&format!("{late},{}\n", i % 2));
        }
        let (summary, bytes) = copy_of(&csv);
        assert_eq!(summary.columns[0].kind, ColumnType::String);
        assert!(summary.columnar, "the copy holds the late text column");
        let cells = read_bytes(bytes, &wanted(&summary), rows).unwrap();
        let Cells::Texts(late) = &cells[0] else {
            panic!("{:?}", cells[0])
        };
        assert_eq!((late[0].as_str(), late[rows - 1].as_str()), ("", "text"));

        // Late numbers are stored as text and read back as the very same numbers.
        let csv = csv.replace("text", "4.000000000000001e-7");
        let (summary, bytes) = copy_of(&csv);
        assert_eq!(summary.columns[0].kind, ColumnType::Number);
        assert!(summary.columnar);
        let cells = read_bytes(bytes, &wanted(&summary), rows).unwrap();
        let Cells::Numbers(late) = &cells[0] else {
            panic!("{:?}", cells[0])
        };
        assert_eq!(late.len(), rows);
        assert_eq!(late[rows - 1], 4.000000000000001e-7);
        assert!(late[0].is_nan());
    }
}
