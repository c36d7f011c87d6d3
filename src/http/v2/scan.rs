//! The fast path for the inference requests clients send most: one object with an optional
//! string `id` and `inputs`, each input an object of `name`, `shape`, `datatype` and a flat
//! `data` array whose elements share one JSON type (what `tritonclient[http]` and the KServe
//! clients write for JSON tensors).
//!
//! Why hand-written: serde_json spent about 19 % of the server's time on a one-row V2 request
//! of 24 tensors (4–5 µs for its 1,370 bytes, about 15 ns per token), more than any other
//! stage; sonic-rs and simd-json were slower still on the same body (docs/performance.md).
//!
//! It is a recogniser, not a second JSON parser: [`request`] returns `None` for anything it
//! does not recognise (an escape, a control character, a key it does not know or meets
//! twice, nested or mixed `data`, `null`, a number it does not read as serde_json does), and
//! the caller then parses the body with serde_json, whose answer (value or error) is the
//! reference. When it does return a request, that request is the one serde_json would give:
//! `fuzz::v2_request` and the tests below check this on every body they try.

use std::{borrow::Cow, marker::PhantomData};

use smallvec::{smallvec, SmallVec};

use super::tensor::{InferRequest, InputTensor, INPUTS_CAPACITY};
use crate::{model::decode::from_json_bytes, serving::tensors::json::JsonData};

/// The request in `text`, if it has the common shape; `None` sends it to serde_json.
pub fn request(text: &str) -> Option<InferRequest<'_>> {
    let mut scanner = Scanner { text, pos: 0 };
    let request = scanner.request()?;
    scanner.whitespace();
    (scanner.pos == text.len()).then_some(request)
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

/// A number as serde_json hands it to a visitor.
enum Number {
    Int(i64),
    Float(f64),
}

/// One `data` element.
enum Element<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// JSON's four whitespace bytes.
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips whitespace, then takes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        self.whitespace();
        let found = self.peek() == Some(byte);
        self.pos += usize::from(found);
        found
    }

    /// A string with no escape and no control character, borrowed from the text.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        let length = self.text.as_bytes()[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        let end = start + length;
        if self.text.as_bytes()[end] != b'"' {
            return None;
        }
        self.pos = end + 1;
        // `"` is ASCII: both ends are on character boundaries of the valid UTF-8 text.
        Some(&self.text[start..end])
    }

    /// `key` then `:`.
    fn key(&mut self) -> Option<&'a str> {
        let key = self.string()?;
        self.eat(b':').then_some(key)
    }

    /// Whether the object or array goes on (`,`) or ends (`close`); `None` for anything else.
    fn more(&mut self, close: u8) -> Option<bool> {
        if self.eat(b',') {
            Some(true)
        } else if self.eat(close) {
            Some(false)
        } else {
            None
        }
    }

    /// A JSON number, read as serde_json reads it: an integer of up to 18 digits exactly
    /// (longer ones, and `-0`, which serde_json makes a float, are left to it); anything
    /// with a fraction or an exponent by serde_json itself, so that the double is the same.
    fn number(&mut self) -> Option<Number> {
        self.whitespace();
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        self.pos += usize::from(negative);
        let digits_start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        let digits = &bytes[digits_start..self.pos];
        if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let float = serde_json::from_str::<f64>(&self.text[start..self.pos]).ok()?;
            return Some(Number::Float(float));
        }
        if digits.len() > 18 {
            return None;
        }
        let magnitude = digits
            .iter()
            .fold(0i64, |value, &digit| value * 10 + i64::from(digit - b'0'));
        match (negative, magnitude) {
            (true, 0) => None,
            (true, magnitude) => Some(Number::Int(-magnitude)),
            (false, magnitude) => Some(Number::Int(magnitude)),
        }
    }

    /// `literal` (`true`, `false`) if it is next.
    fn literal(&mut self, literal: &str) -> bool {
        let found = self.text[self.pos..].starts_with(literal);
        if found {
            self.pos += literal.len();
        }
        found
    }

    fn request(&mut self) -> Option<InferRequest<'a>> {
        if !self.eat(b'{') {
            return None;
        }
        let mut id = None;
        let mut inputs = None;
        if !self.eat(b'}') {
            loop {
                match self.key()? {
                    "id" if id.is_none() => id = Some(self.string()?.to_owned()),
                    "inputs" if inputs.is_none() => inputs = Some(self.inputs()?),
                    _ => return None,
                }
                if !self.more(b'}')? {
                    break;
                }
            }
        }
        Some(InferRequest {
            id,
            inputs: inputs?,
            outputs: None,
            parameters: None,
        })
    }

    fn inputs(&mut self) -> Option<Vec<InputTensor<'a>>> {
        if !self.eat(b'[') {
            return None;
        }
        let mut inputs = Vec::with_capacity(INPUTS_CAPACITY);
        if self.eat(b']') {
            return Some(inputs);
        }
        loop {
            inputs.push(self.input()?);
            if !self.more(b']')? {
                return Some(inputs);
            }
        }
    }

    fn input(&mut self) -> Option<InputTensor<'a>> {
        if !self.eat(b'{') {
            return None;
        }
        let (mut name, mut shape, mut datatype, mut data) = (None, None, None, None);
        loop {
            match self.key()? {
                "name" if name.is_none() => name = Some(self.string()?),
                "shape" if shape.is_none() => shape = Some(self.shape()?),
                "datatype" if datatype.is_none() => datatype = Some(self.string()?),
                "data" if data.is_none() => data = Some(self.data()?),
                _ => return None,
            }
            if !self.more(b'}')? {
                break;
            }
        }
        Some(InputTensor {
            name: Cow::Borrowed(name?),
            shape: shape?,
            datatype: Cow::Borrowed(datatype?),
            data: data?,
            parameters: None,
        })
    }

    fn shape(&mut self) -> Option<SmallVec<[i64; 4]>> {
        if !self.eat(b'[') {
            return None;
        }
        let mut shape = SmallVec::new();
        if self.eat(b']') {
            return Some(shape);
        }
        loop {
            match self.number()? {
                Number::Int(dimension) => shape.push(dimension),
                Number::Float(_) => return None,
            }
            if !self.more(b']')? {
                return Some(shape);
            }
        }
    }

    fn element(&mut self) -> Option<Element<'a>> {
        self.whitespace();
        Some(match self.peek()? {
            b'"' => Element::Text(self.string()?),
            b't' if self.literal("true") => Element::Bool(true),
            b'f' if self.literal("false") => Element::Bool(false),
            b'-' | b'0'..=b'9' => match self.number()? {
                Number::Int(value) => Element::Int(value),
                Number::Float(value) => Element::Float(value),
            },
            _ => return None,
        })
    }

    /// A flat, non-empty array of elements of one JSON type.
    fn data(&mut self) -> Option<JsonData<'a>> {
        if !self.eat(b'[') {
            return None;
        }
        let mut data = match self.element()? {
            Element::Bool(value) => JsonData::Bool(smallvec![value]),
            Element::Int(value) => JsonData::Int(smallvec![value]),
            Element::Float(value) => JsonData::Float(smallvec![value]),
            Element::Text(value) => JsonData::Text(smallvec![Cow::Borrowed(value)]),
        };
        while self.more(b']')? {
            match (&mut data, self.element()?) {
                (JsonData::Bool(values), Element::Bool(value)) => values.push(value),
                (JsonData::Int(values), Element::Int(value)) => values.push(value),
                (JsonData::Float(values), Element::Float(value)) => values.push(value),
                (JsonData::Text(values), Element::Text(value)) => values.push(Cow::Borrowed(value)),
                _ => return None,
            }
        }
        Some(data)
    }
}

/// Checks the promise above on one body, for the fuzz target and the tests: the fast path
/// declines `text` or reads it as serde_json does. Panics (a fuzz finding) when it does not;
/// returns whether it took the fast path.
pub fn agrees_with_serde_json(text: &str) -> bool {
    let Some(fast) = request(text) else {
        return false;
    };
    match from_json_bytes::<PhantomData<InferRequest<'_>>>(text.as_bytes(), PhantomData) {
        Ok(reference) => assert_eq!(
            format!("{fast:?}"),
            format!("{reference:?}"),
            "the fast path read {text:?} differently"
        ),
        Err(error) => panic!("the fast path took {text:?}, which serde_json refuses: {error}"),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::split::SplitMix64;

    /// The one-row request `make bench` sends, as tritonclient shapes it.
    const TRITON_ROW: &str = r#"{"id":"bench","inputs":[{"name":"sexo","shape":[1,1],"datatype":"BYTES","data":["V"]},{"name":"age","shape":[1,1],"datatype":"INT64","data":[56]},{"name":"renta","shape":[1,1],"datatype":"FP64","data":[87218.1]},{"name":"ind_empleado","shape":[1,1],"datatype":"BOOL","data":[false]}]}"#;

    #[test]
    fn the_requests_clients_send_take_the_fast_path_and_read_as_serde_json_reads_them() {
        let bodies = [
            TRITON_ROW,
            r#"{"inputs":[{"name":"age","shape":[3],"datatype":"FP32","data":[1.5,-2e3,0.1]}]}"#,
            r#"{"inputs":[]}"#,
            "{\n  \"inputs\" : [ {\"name\": \"x\", \"shape\": [ 2 , 1 ], \"datatype\": \"INT64\",\r\n\t\"data\": [ -7 , 123456789012345678 ] } ] ,\"id\":\"\" }\n",
            r#"{"inputs":[{"data":["é","ü"],"datatype":"BYTES","shape":[2],"name":"naïve"}]}"#,
            r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP64","data":[1.7976931348623157e308,5e-324,1E2,2.5e+1]}]}"#,
        ];
        for body in bodies {
            assert!(agrees_with_serde_json(body), "declined: {body}");
        }
    }

    #[test]
    fn what_the_fast_path_does_not_recognise_goes_to_serde_json() {
        let declined = [
            // escapes and control characters
            r#"{"inputs":[{"name":"a\"b","shape":[1],"datatype":"BYTES","data":["x"]}]}"#,
            "{\"inputs\":[{\"name\":\"a\tb\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"x\"]}]}",
            // -0 (a float to serde_json), 19 digits, leading zeros, a bare minus
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[-0]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1234567890123456789]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[01]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[-]}]}"#,
            // mixed, nested, null, empty or absent data; a float in the shape
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","data":[1,2.5]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1,1],"datatype":"FP64","data":[[1]]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[null]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[0],"datatype":"FP64","data":[]}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64"}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1.0],"datatype":"FP64","data":[1]}]}"#,
            // keys it does not know, or meets twice; a missing one
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1],"parameters":{}}]}"#,
            r#"{"inputs":[],"outputs":[{"name":"probabilities"}]}"#,
            r#"{"inputs":[],"inputs":[]}"#,
            r#"{"inputs":[{"name":"x","name":"y","shape":[1],"datatype":"FP64","data":[1]}]}"#,
            r#"{"inputs":[{"shape":[1],"datatype":"FP64","data":[1]}]}"#,
            r#"{"id":null,"inputs":[]}"#,
            r#"{}"#,
            // not JSON, or more than one document
            r#"{"inputs":[],}"#,
            r#"{"inputs":[]} {}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[tru]}]}"#,
            "",
        ];
        for body in declined {
            assert!(request(body).is_none(), "taken: {body}");
        }
    }

    #[test]
    fn no_mutation_of_a_request_is_read_differently_by_the_fast_path() {
        const BYTES: &[u8] = br#"{}[]",:-+.0123456789eE tfalsenul\/"#;
        let mut rng = SplitMix64::new(15);
        let (mut tried, mut taken) = (0, 0);
        for _ in 0..20_000 {
            let mut body = TRITON_ROW.as_bytes().to_vec();
            for _ in 0..1 + rng.next_u64() % 3 {
                let at = (rng.next_u64() % body.len() as u64) as usize;
                let byte = BYTES[(rng.next_u64() % BYTES.len() as u64) as usize];
                match rng.next_u64() % 3 {
                    0 => drop(body.remove(at)),
                    1 => body.insert(at, byte),
                    _ => body[at] = byte,
                }
            }
            let Ok(text) = std::str::from_utf8(&body) else {
                continue;
            };
            tried += 1;
            taken += usize::from(agrees_with_serde_json(text));
        }
        // Most one-byte changes break the JSON or the shape; enough of them keep both (a
        // changed digit, name or value) for the comparison to mean something.
        assert!(
            taken > tried / 20,
            "{taken} of {tried} mutations took the fast path"
        );
    }
}
