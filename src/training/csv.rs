//! The `csv` training shape, with a small RFC 4180 reader: comma-separated, `"` quoting with
//! `""` as an escaped quote, `\n` or `\r\n` line ends, blank lines skipped, a UTF-8 BOM ignored.

use serde_json::Value;

use super::data::{feature_names, push, target, target_names, too_large, Data, FeatureValues};
use crate::model::FieldError;

/// One record and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: usize,
    pub cells: Vec<String>,
}

/// Splits `text` into rows; the error says where the text stops being CSV.
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut line = 1;
    let mut start_line = 1;
    let mut quoted = false;
    // Whether the current cell began with a quote (and so may not take more text after it).
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    cell.push(c);
                }
                _ => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => return Err(format!("line {line}: a quote inside an unquoted cell")),
            ',' => {
                cells.push(std::mem::take(&mut cell));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_row(&mut rows, &mut cells, &mut cell, was_quoted, start_line);
                was_quoted = false;
                line += 1;
                start_line = line;
            }
            _ if was_quoted => {
                return Err(format!("line {line}: text after a closing quote"));
            }
            _ => cell.push(c),
        }
    }
    if quoted {
        return Err(format!("line {start_line}: a quoted cell is never closed"));
    }
    end_row(&mut rows, &mut cells, &mut cell, was_quoted, start_line);
    Ok(rows)
}

fn end_row(
    rows: &mut Vec<Row>,
    cells: &mut Vec<String>,
    cell: &mut String,
    was_quoted: bool,
    line: usize,
) {
    if cells.is_empty() && cell.is_empty() && !was_quoted {
        return; // a blank line
    }
    cells.push(std::mem::take(cell));
    rows.push(Row {
        line,
        cells: std::mem::take(cells),
    });
}

/// CSV text with a header line and the target column(s) named.
pub fn data(
    text: &Value,
    target_value: Option<&Value>,
    max_cells: usize,
    errors: &mut Vec<FieldError>,
) -> Option<Data> {
    let before = errors.len();
    let targets = target_names(target_value, errors);
    let Some(text) = text.as_str() else {
        push(
            errors,
            FieldError::new("csv", "type", "must be CSV text with a header line"),
        );
        return None;
    };
    let rows = match parse(text) {
        Ok(rows) => rows,
        Err(message) => {
            push(errors, FieldError::new("csv", "syntax", message));
            return None;
        }
    };
    let Some((header, body)) = rows.split_first().filter(|(_, body)| !body.is_empty()) else {
        push(
            errors,
            FieldError::new("csv", "empty", "needs a header line and at least one row"),
        );
        return None;
    };
    let (targets, multi) = targets?;
    let names = &header.cells;
    feature_names(names, "csv.header", errors);
    let index = |name: &str| names.iter().position(|n| n == name);
    for name in &targets {
        if index(name).is_none() {
            push(
                errors,
                FieldError::new(
                    "target",
                    "missing",
                    format!("`{name}` is not a column of the CSV header"),
                ),
            );
        }
    }
    // Features only, as the other shapes count them (the target columns are not features).
    let features = names.len().saturating_sub(targets.len()).max(1);
    if body.len().saturating_mul(features) > max_cells {
        push(errors, too_large("csv", body.len(), features, max_cells));
    }
    for row in body.iter().filter(|row| row.cells.len() != names.len()) {
        let message = format!(
            "line {}: {} cells, the header has {}",
            row.line,
            row.cells.len(),
            names.len()
        );
        push(errors, FieldError::new("csv", "shape", message));
    }
    if errors.len() > before {
        return None;
    }
    let column = |j: usize| {
        body.iter()
            .map(move |row| (row.line, row.cells.get(j).map_or("", String::as_str)))
    };
    let mut features = Vec::new();
    let mut columns = Vec::new();
    for (j, name) in names
        .iter()
        .enumerate()
        .filter(|(_, n)| !targets.contains(n))
    {
        features.push(name.clone());
        columns.push(csv_column(name, column(j), errors));
    }
    let target_cells: Vec<Vec<Value>> = targets
        .iter()
        .map(|name| {
            let j = index(name).unwrap_or_default();
            let cells: Vec<&str> = column(j).map(|(_, s)| s).collect();
            let all_ints = cells.iter().all(|s| s.trim().parse::<i64>().is_ok());
            cells
                .iter()
                .map(|s| match s.trim().parse::<i64>() {
                    Ok(i) if all_ints => Value::from(i),
                    _ => Value::String((*s).to_owned()),
                })
                .collect()
        })
        .collect();
    let lines: Vec<usize> = body.iter().map(|row| row.line).collect();
    let field = |i: usize, name: &str| {
        format!(
            "csv.line[{}].{name}",
            lines.get(i).copied().unwrap_or_default()
        )
    };
    if features.is_empty() {
        push(
            errors,
            FieldError::new("csv", "shape", "has no feature columns besides the target"),
        );
    }
    let target = target(targets, multi, &target_cells, field, errors);
    (errors.len() == before).then_some(Data {
        features,
        columns,
        target,
    })
}

/// A CSV column is numeric when every cell is a finite number, categorical otherwise.
fn csv_column<'a>(
    name: &str,
    cells: impl Iterator<Item = (usize, &'a str)> + Clone,
    errors: &mut Vec<FieldError>,
) -> FeatureValues {
    let parsed: Vec<(usize, &str, Option<f64>)> = cells
        .map(|(line, s)| (line, s, s.trim().parse::<f64>().ok()))
        .collect();
    let numbers = parsed.iter().filter(|(_, _, v)| v.is_some()).count();
    let blanks = parsed
        .iter()
        .filter(|(_, s, _)| s.trim().is_empty())
        .count();
    if numbers > 0 && numbers + blanks == parsed.len() {
        let mut out = Vec::with_capacity(parsed.len());
        for (line, _, value) in &parsed {
            match value.filter(|v| v.is_finite()) {
                Some(v) => out.push(v),
                None => {
                    let message = if value.is_some() {
                        "is not a finite number"
                    } else {
                        "is empty; missing values are not imputed"
                    };
                    push(
                        errors,
                        FieldError::new(format!("csv.line[{line}].{name}"), "type", message),
                    );
                }
            }
        }
        return FeatureValues::Numeric(out);
    }
    FeatureValues::Categorical(parsed.into_iter().map(|(_, s, _)| s.to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(text: &str) -> Vec<Vec<String>> {
        parse(text).unwrap().into_iter().map(|r| r.cells).collect()
    }

    #[test]
    fn plain_quoted_and_crlf() {
        assert_eq!(
            cells("a,b\r\n1,\"x, \"\"y\"\"\"\n\n2,\n"),
            vec![vec!["a", "b"], vec!["1", "x, \"y\""], vec!["2", ""]]
        );
    }

    #[test]
    fn lines_and_errors() {
        let rows = parse("a\n\"multi\nline\"\nz").unwrap();
        assert_eq!(rows[2].line, 4);
        assert!(parse("a\n\"open").unwrap_err().contains("line 2"));
        assert!(parse("a\nx\"y").is_err());
        assert!(parse("\"a\"b").is_err());
        assert_eq!(cells("\u{feff}a,\"\"\n"), vec![vec!["a", ""]]);
    }
}
