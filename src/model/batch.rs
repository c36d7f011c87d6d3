//! Validated, column-oriented model input: one typed column per graph input.

use super::schema::ElementType;

#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    String(Vec<String>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Bool(Vec<bool>),
}

impl Column {
    pub fn with_capacity(element: ElementType, rows: usize) -> Self {
        match element {
            ElementType::String => Self::String(Vec::with_capacity(rows)),
            ElementType::Float32 => Self::Float32(Vec::with_capacity(rows)),
            ElementType::Float64 => Self::Float64(Vec::with_capacity(rows)),
            ElementType::Int64 => Self::Int64(Vec::with_capacity(rows)),
            ElementType::Int32 => Self::Int32(Vec::with_capacity(rows)),
            ElementType::Bool => Self::Bool(Vec::with_capacity(rows)),
        }
    }
}

/// A batch of records ready for a backend: `columns[i]` feeds graph input `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureBatch {
    pub rows: usize,
    pub columns: Vec<Column>,
}

/// Model output: `rows × width` scores, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub rows: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl Scores {
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks(self.width.max(1)).take(self.rows)
    }
}
