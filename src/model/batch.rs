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

    pub fn len(&self) -> usize {
        match self {
            Self::String(v) => v.len(),
            Self::Float32(v) => v.len(),
            Self::Float64(v) => v.len(),
            Self::Int64(v) => v.len(),
            Self::Int32(v) => v.len(),
            Self::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `other`'s values (same variant) after this column's.
    pub fn extend_from(&mut self, other: &Column) -> bool {
        match (self, other) {
            (Self::String(a), Self::String(b)) => a.extend_from_slice(b),
            (Self::Float32(a), Self::Float32(b)) => a.extend_from_slice(b),
            (Self::Float64(a), Self::Float64(b)) => a.extend_from_slice(b),
            (Self::Int64(a), Self::Int64(b)) => a.extend_from_slice(b),
            (Self::Int32(a), Self::Int32(b)) => a.extend_from_slice(b),
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
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
    pub fn row(&self, index: usize) -> &[f32] {
        let start = index * self.width;
        self.values.get(start..start + self.width).unwrap_or(&[])
    }

    pub fn iter_rows(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks(self.width.max(1)).take(self.rows)
    }
}
