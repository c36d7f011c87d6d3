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

/// Index of the largest value: the first on ties; NaN is never chosen.
pub fn argmax<T: Copy + PartialOrd>(row: &[T]) -> Option<usize> {
    row.iter()
        .enumerate()
        .filter(|(_, v)| v.partial_cmp(v).is_some())
        .fold(None, |best: Option<(usize, T)>, (i, &v)| match best {
            Some((_, b)) if v <= b => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

impl Scores {
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks(self.width.max(1)).take(self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_largest_and_never_nan() {
        assert_eq!(argmax(&[0.1_f32, 0.7, 0.2]), Some(1));
        assert_eq!(argmax(&[0.5_f64, 0.5]), Some(0));
        assert_eq!(argmax(&[f32::NAN, 0.2, f32::NAN]), Some(1));
        assert_eq!(argmax::<f32>(&[]), None);
        assert_eq!(argmax(&[f64::NAN]), None);
    }
}
