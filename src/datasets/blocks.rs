//! Cutting a CSV stream into blocks of whole records, so that the blocks can be parsed on
//! several threads (the `csv` crate tokenises each block; see [`super::scan`]).
//!
//! A block ends just after a record terminator (`\n` or `\r`) that lies outside quotes. The
//! quoting rules are those of `csv_core` with the `csv` crate's defaults: a `"` opens a
//! quoted field only at the start of a field, `""` inside one is a quote, and a `"` in the
//! middle of an unquoted field is an ordinary byte. So a newline inside a quoted field is
//! never a cut, and each block starts where the reader of the whole stream would be at the
//! start of a record. Each block knows the line it starts on (the `csv` crate counts lines
//! by `\n` bytes, so a block's first line is one plus the `\n` bytes before it), which is
//! what keeps the line numbers of errors those of the whole stream.

use std::io::BufRead;

/// Where the scan is, between two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field (or of a record).
    FieldStart,
    /// In an unquoted field (a `"` here is an ordinary byte).
    Unquoted,
    /// In a quoted field.
    Quoted,
    /// Just after a `"` in a quoted field: the field's end, or the first half of `""`.
    QuoteInQuoted,
}

/// A block of whole records.
#[derive(Debug)]
pub struct Block {
    pub bytes: Vec<u8>,
    /// The line (1-based, as the `csv` crate counts them) the block starts on.
    pub first_line: u64,
}

/// Reads a stream and hands it out in blocks of at most `max_records` records, or about
/// `max_bytes` bytes when that comes first (a block holds at least one whole record, so a
/// single longer record makes a longer block). The stream is read through its own buffer
/// (`BufRead`), so the bytes of an upload go from the request's chunks straight into blocks.
pub struct BlockReader<R> {
    read: R,
    /// Bytes read and not yet handed out (the current block and what follows it).
    buffer: Vec<u8>,
    /// How far `buffer` has been scanned, and the state there.
    scanned: usize,
    state: State,
    /// The end of the last whole record found in `buffer`, and the records up to it.
    cut: usize,
    /// Buffers of blocks already parsed, handed back by [`BlockReader::recycle`]: reused for
    /// the next blocks, whose pages then need not be faulted in afresh (a page fault costs
    /// about 2 µs on the development host; see docs/performance.md, session 14).
    spare: Vec<Vec<u8>>,
    records: usize,
    line: u64,
    done: bool,
    max_records: usize,
    max_bytes: usize,
}

/// The most bytes appended to a block at once.
const READ_SIZE: usize = 256 * 1024;

/// The most parsed blocks' buffers kept for reuse (blocks in flight are at most one per
/// parser thread, plus one).
const MAX_SPARE: usize = 4;

impl<R: BufRead> BlockReader<R> {
    pub fn new(read: R, max_records: usize, max_bytes: usize) -> Self {
        Self {
            read,
            buffer: Vec::new(),
            scanned: 0,
            state: State::FieldStart,
            cut: 0,
            spare: Vec::new(),
            records: 0,
            line: 1,
            done: false,
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// The block size from now on (the first block may be smaller, to learn the columns'
    /// types early).
    pub fn set_limits(&mut self, max_records: usize, max_bytes: usize) {
        self.max_records = max_records.max(1);
        self.max_bytes = max_bytes.max(1);
    }

    /// Takes back the bytes of a block that has been parsed, for a later block.
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        if self.spare.len() < MAX_SPARE {
            bytes.clear();
            self.spare.push(bytes);
        }
    }

    /// The next block; `None` at the end of the stream. An I/O error is the reader's.
    pub fn next_block(&mut self) -> std::io::Result<Option<Block>> {
        loop {
            self.scan();
            let full = self.records >= self.max_records
                || (self.cut > 0 && self.buffer.len() >= self.max_bytes);
            if full {
                return Ok(Some(self.take(self.cut)));
            }
            if self.done {
                return Ok((!self.buffer.is_empty()).then(|| self.take(self.buffer.len())));
            }
            match self.read.fill_buf() {
                Ok(bytes) => {
                    let n = bytes.len().min(READ_SIZE);
                    self.buffer
                        .extend_from_slice(bytes.get(..n).unwrap_or_default());
                    self.read.consume(n);
                    self.done = n == 0;
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Hands out `buffer[..end]`; the rest starts the next block.
    fn take(&mut self, end: usize) -> Block {
        let rest = self.buffer.get(end..).unwrap_or_default();
        // Room for a whole block (pages are only touched as bytes arrive).
        let room = self.max_bytes.min(16 << 20) + READ_SIZE;
        let mut next = self.spare.pop().unwrap_or_default();
        next.reserve(rest.len().max(room));
        next.extend_from_slice(rest);
        let mut bytes = std::mem::replace(&mut self.buffer, next);
        bytes.truncate(end);
        let first_line = self.line;
        self.line += memchr::memchr_iter(b'\n', &bytes).count() as u64;
        self.scanned -= end.min(self.scanned);
        self.cut = 0;
        self.records = 0;
        Block { bytes, first_line }
    }

    /// Scans what has been read since the last scan for record ends, up to `max_records`.
    fn scan(&mut self) {
        let buffer = &self.buffer;
        let mut at = self.scanned;
        while at < buffer.len() && self.records < self.max_records {
            match self.state {
                State::FieldStart | State::Unquoted => {
                    let Some(found) = memchr::memchr3(b'"', b'\n', b'\r', &buffer[at..]) else {
                        // The last byte decides the state: a delimiter starts a field.
                        if let Some(&last) = buffer.last() {
                            self.state = if last == b',' {
                                State::FieldStart
                            } else {
                                State::Unquoted
                            };
                        }
                        at = buffer.len();
                        break;
                    };
                    let i = at + found;
                    if buffer[i] == b'"' {
                        // A quote opens a field only at its start.
                        let starts = if i == at {
                            self.state == State::FieldStart
                        } else {
                            matches!(buffer[i - 1], b',' | b'\n' | b'\r')
                        };
                        self.state = if starts {
                            State::Quoted
                        } else {
                            State::Unquoted
                        };
                    } else {
                        // A terminator outside quotes: a record ends here, unless the line
                        // is blank (the reader skips those; a cut after one is still fine).
                        let blank = i == 0 || matches!(buffer[i - 1], b'\n' | b'\r');
                        self.state = State::FieldStart;
                        self.records += usize::from(!blank);
                        self.cut = i + 1;
                    }
                    at = i + 1;
                }
                State::Quoted => match memchr::memchr(b'"', &buffer[at..]) {
                    Some(found) => {
                        self.state = State::QuoteInQuoted;
                        at += found + 1;
                    }
                    None => at = buffer.len(),
                },
                State::QuoteInQuoted => {
                    let byte = buffer[at];
                    self.state = match byte {
                        b'"' => State::Quoted,
                        b',' => State::FieldStart,
                        b'\n' | b'\r' => {
                            self.records += 1;
                            self.cut = at + 1;
                            State::FieldStart
                        }
                        _ => State::Unquoted,
                    };
                    at += 1;
                }
            }
        }
        self.scanned = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(text: &str, records: usize, bytes: usize) -> Vec<(String, u64)> {
        // Three bytes per read: every cut must survive a record split across reads.
        let trickle = std::io::BufReader::with_capacity(3, text.as_bytes());
        let mut reader = BlockReader::new(trickle, records, bytes);
        let mut out = Vec::new();
        while let Some(block) = reader.next_block().unwrap() {
            out.push((String::from_utf8(block.bytes).unwrap(), block.first_line));
        }
        assert_eq!(
            out.iter().map(|(b, _)| b.as_str()).collect::<String>(),
            text,
            "the blocks are the stream"
        );
        out
    }

    #[test]
    fn a_newline_inside_quotes_is_not_a_cut_and_lines_count_from_the_stream() {
        let text = "a,b\n1,\"x\ny\"\n2,\"say \"\"hi\"\"\n\"\n3,z\n";
        let out = blocks(text, 1, usize::MAX);
        assert_eq!(
            out,
            vec![
                ("a,b\n".to_owned(), 1),
                ("1,\"x\ny\"\n".to_owned(), 2),
                ("2,\"say \"\"hi\"\"\n\"\n".to_owned(), 4),
                ("3,z\n".to_owned(), 6),
            ]
        );
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_an_ordinary_byte() {
        // `5 inch"` does not open a quoted field: the newline after it ends the record.
        let out = blocks("a,b\n5 inch\",x\n2,y\r\n3,z", 1, usize::MAX);
        let cuts: Vec<&str> = out.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(cuts, ["a,b\n", "5 inch\",x\n", "2,y\r", "\n3,z"]);
        // The CRLF's `\n` is in the last block, so that block starts on line 3 (and its
        // record, after the `\n`, is on line 4, as the whole stream's reader counts).
        assert_eq!(out[3].1, 3);
    }

    #[test]
    fn blocks_end_at_the_byte_limit_on_a_record_end() {
        let row = "1.5,2.5,3\n";
        let text = row.repeat(1000);
        let out = blocks(&text, usize::MAX, 95);
        assert!(out.len() > 10);
        let mut line = 1;
        for (block, first_line) in &out {
            assert!(block.ends_with('\n'));
            assert!(block.len() <= 100 && block.len() % row.len() == 0);
            assert_eq!(*first_line, line);
            line += (block.len() / row.len()) as u64;
        }
        let out = blocks(&text, 7, usize::MAX);
        assert!(out[..out.len() - 1]
            .iter()
            .all(|(b, _)| b.len() == 7 * row.len()));
    }
}
