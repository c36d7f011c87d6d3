//! The records of one CSV block (see [`super::blocks`]), from the faster of two tokenizers
//! that reads the block exactly as the `csv` crate would.
//!
//! `simd-csv` finds cell and record ends with SIMD searches. On the numeric CSVs of
//! `make bench-train` it splits the cells about three times as fast as the `csv` crate
//! (100,000 × 50 cells, 47 MB: 140 against 430 ms on a loaded host, same process, six
//! rounds), and the tokenizer was a quarter of an upload's CPU. Its quoting rules are not
//! `csv_core`'s, though: a `"` in the middle of an unquoted field opens a quoted one, a lone
//! `\r` is not a record terminator, and a byte-order mark at the start of its input is
//! dropped. So [`Split`] reads only the blocks where the two tokenizers cannot differ (no
//! `"`, every `\r` followed by `\n` or ending the block, no byte-order mark at the start);
//! every other block goes through the `csv` crate ([`CsvRecords`]). Both give the line a
//! record starts on as the `csv` crate counts it: one plus the `\n` bytes before it.

use std::cell::Cell;

use csv::ByteRecord as CsvRecord;
use simd_csv::{ByteRecord as SplitRecord, TotalReader, TotalReaderBuilder};

use super::DatasetError;

/// A block's records, one at a time.
pub trait Records {
    /// Reads the next record; `false` at the end of the block.
    fn next_record(&mut self) -> Result<bool, DatasetError>;
    /// The current record's number of cells.
    fn width(&self) -> usize;
    /// The current record's cells, raw (untrimmed) bytes.
    fn cells(&self) -> impl Iterator<Item = &[u8]>;
    /// The line of the stream the current record starts on (1-based).
    fn line(&self) -> u64;
}

/// Whether [`Split`] reads `block` as the `csv` crate does (see the module's comment).
pub fn splits_like_csv(block: &[u8]) -> bool {
    if block.starts_with(b"\xEF\xBB\xBF") {
        return false;
    }
    memchr::memchr2_iter(b'"', b'\r', block)
        .all(|at| block[at] == b'\r' && block.get(at + 1).is_none_or(|&next| next == b'\n'))
}

/// The blank lines (`\n` and `\r` bytes) at the start of `bytes`, which both readers skip
/// before a record.
fn blank_lines(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .unwrap_or(bytes.len());
    &bytes[..end]
}

/// A quote-free block, split by `simd-csv`.
pub struct Split<'b> {
    bytes: &'b [u8],
    reader: TotalReader<'b>,
    record: SplitRecord,
    /// Where the current record starts in `bytes`.
    start: usize,
    /// The `\n` bytes before `counted` are counted in `line`, the line at `counted` (counted
    /// on demand, behind `&self`, so that cells can be borrowed meanwhile).
    counted: Cell<usize>,
    line: Cell<u64>,
}

impl<'b> Split<'b> {
    /// `bytes` starts at a record's start on line `first_line` of the stream, and passed
    /// [`splits_like_csv`].
    pub fn new(bytes: &'b [u8], first_line: u64) -> Self {
        Self {
            bytes,
            reader: TotalReaderBuilder::new()
                .has_headers(false)
                .from_bytes(bytes),
            record: SplitRecord::new(),
            start: 0,
            counted: Cell::new(0),
            line: Cell::new(first_line),
        }
    }
}

impl Records for Split<'_> {
    fn next_record(&mut self) -> Result<bool, DatasetError> {
        let before = self.reader.position() as usize;
        // The reader skips blank lines before a record; the record starts after them.
        self.start = before + blank_lines(&self.bytes[before..]).len();
        Ok(self.reader.read_byte_record(&mut self.record))
    }

    fn width(&self) -> usize {
        self.record.len()
    }

    fn cells(&self) -> impl Iterator<Item = &[u8]> {
        self.record.iter()
    }

    fn line(&self) -> u64 {
        let newlines = memchr::memchr_iter(b'\n', &self.bytes[self.counted.get()..self.start]);
        self.line.set(self.line.get() + newlines.count() as u64);
        self.counted.set(self.start);
        self.line.get()
    }
}

/// Any block, read by the `csv` crate (RFC 4180 quoting, any line ends).
pub struct CsvRecords<'b> {
    reader: csv::Reader<&'b [u8]>,
    bytes: &'b [u8],
    record: CsvRecord,
    first_line: u64,
}

impl<'b> CsvRecords<'b> {
    /// Reads what is left of `reader`, which reads `bytes`, whose first line is line
    /// `first_line` of the stream.
    pub fn new(reader: csv::Reader<&'b [u8]>, bytes: &'b [u8], first_line: u64) -> Self {
        Self {
            reader,
            bytes,
            record: CsvRecord::new(),
            first_line,
        }
    }
}

impl Records for CsvRecords<'_> {
    fn next_record(&mut self) -> Result<bool, DatasetError> {
        self.reader
            .read_byte_record(&mut self.record)
            .map_err(|error| super::scan::csv_error_at(error, self.first_line))
    }

    fn width(&self) -> usize {
        self.record.len()
    }

    fn cells(&self) -> impl Iterator<Item = &[u8]> {
        self.record.iter()
    }

    fn line(&self) -> u64 {
        let Some(position) = self.record.position() else {
            return self.first_line;
        };
        // The crate's position is where it began to read, before the blank lines it skips.
        let rest = self
            .bytes
            .get(position.byte() as usize..)
            .unwrap_or_default();
        let skipped = memchr::memchr_iter(b'\n', blank_lines(rest)).count();
        self.first_line + position.line() - 1 + skipped as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `block` as (line, cells), through `records`.
    fn all(mut records: impl Records) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        while records.next_record().unwrap() {
            let cells = records.cells().map(<[u8]>::to_vec).collect();
            out.push((records.line(), cells));
        }
        out
    }

    fn by_csv(block: &[u8], first_line: u64) -> Vec<(u64, Vec<Vec<u8>>)> {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(block);
        all(CsvRecords::new(reader, block, first_line))
    }

    #[test]
    fn quote_free_blocks_split_into_the_csv_crates_records_and_lines() {
        let blocks: &[&[u8]] = &[
            b"1,2,3\n4,5,6\n",
            b"1,2,3\n4,5,6",                    // no final newline
            b"\n\n1,2\n\n\n3,4\n\n",            // blank lines before, between, after
            b"1,2\r\n3,4\r\n\r\n5,6\r\n",       // CRLF, with a blank CRLF line
            b"1,2\n3,4\r",                      // a block cut between `\r` and `\n`
            b"\n5,6\n",                         // ... and the block after it
            b" a , b ,\n,,\nx\n1,2,3,4,5\n",    // spaces, empty cells, ragged rows
            b"caf\xC3\xA9,\xFF\xFE,na\xEFve\n", // any bytes
            b"",
        ];
        for block in blocks {
            assert!(
                splits_like_csv(block),
                "{:?}",
                String::from_utf8_lossy(block)
            );
            assert_eq!(
                all(Split::new(block, 7)),
                by_csv(block, 7),
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
    }

    #[test]
    fn records_after_blank_lines_are_on_the_line_an_editor_shows() {
        let block = b"\n\n1,2\n\n\n3,4\r\n\r\n5,6\n";
        let lines = |records: Vec<(u64, Vec<Vec<u8>>)>| -> Vec<u64> {
            records.into_iter().map(|(line, _)| line).collect()
        };
        assert_eq!(lines(all(Split::new(block, 1))), [3, 6, 8]);
        assert_eq!(lines(by_csv(block, 1)), [3, 6, 8]);
    }

    #[test]
    fn lines_are_counted_only_when_asked_and_still_right() {
        let block = b"a\n\nb\nc\n\n\nd\n";
        let mut split = Split::new(block, 10);
        let mut lines = Vec::new();
        let mut index = 0;
        while split.next_record().unwrap() {
            // Ask for the line of every other record only.
            if index % 2 == 1 {
                lines.push(split.line());
            }
            index += 1;
        }
        assert_eq!(lines, [12, 16]);
    }

    #[test]
    fn blocks_where_the_tokenizers_could_differ_go_to_the_csv_crate() {
        let blocks: &[&[u8]] = &[
            b"\"a,b\",c\n",       // a quoted field
            b"12\" pipe,3\n",     // a quote in the middle of an unquoted field
            b"1,2\r3,4\r\n",      // a lone `\r` ends a record for the csv crate
            b"\xEF\xBB\xBFa,b\n", // a byte-order mark
        ];
        for block in blocks {
            assert!(
                !splits_like_csv(block),
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
    }
}
