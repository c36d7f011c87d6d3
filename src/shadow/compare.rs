//! How a challenger's answer compares with the champion's, record by record.

use crate::model::{batch::argmax, Scores};

/// The comparison of one request's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Records where both rank the same label first.
    pub agreements: u64,
    /// Per record: the mean absolute difference of its probabilities.
    pub abs_diffs: Vec<f64>,
}

impl Comparison {
    pub fn rows(&self) -> u64 {
        self.abs_diffs.len() as u64
    }

    pub fn abs_diff_sum(&self) -> f64 {
        self.abs_diffs.iter().sum()
    }
}

/// Compares two answers to the same records; they must have the same shape (a challenger
/// with other labels cannot be compared).
pub fn compare(champion: &Scores, challenger: &Scores) -> Result<Comparison, String> {
    if champion.rows != challenger.rows || champion.width != challenger.width {
        return Err(format!(
            "the challenger answered {}×{} scores, the champion {}×{}",
            challenger.rows, challenger.width, champion.rows, champion.width
        ));
    }
    let mut agreements = 0;
    let mut abs_diffs = Vec::with_capacity(champion.rows);
    for (a, b) in champion.iter_rows().zip(challenger.iter_rows()) {
        if argmax(a) == argmax(b) {
            agreements += 1;
        }
        let total: f64 = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum();
        abs_diffs.push(total / a.len().max(1) as f64);
    }
    Ok(Comparison {
        agreements,
        abs_diffs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(rows: &[&[f32]]) -> Scores {
        Scores {
            rows: rows.len(),
            width: rows.first().map_or(0, |r| r.len()),
            values: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        }
    }

    #[test]
    fn identical_answers_agree_with_no_difference() {
        let a = scores(&[&[0.2, 0.8], &[0.6, 0.4]]);
        let c = compare(&a, &a).unwrap();
        assert_eq!(c.agreements, 2);
        assert_eq!(c.rows(), 2);
        assert_eq!(c.abs_diff_sum(), 0.0);
    }

    #[test]
    fn a_different_winner_is_a_disagreement_and_differences_are_averaged_per_record() {
        let a = scores(&[&[0.2, 0.8], &[0.6, 0.4]]);
        let b = scores(&[&[0.3, 0.7], &[0.4, 0.6]]);
        let c = compare(&a, &b).unwrap();
        assert_eq!(c.agreements, 1);
        assert!((c.abs_diffs[0] - 0.1).abs() < 1e-6);
        assert!((c.abs_diffs[1] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn answers_of_different_shapes_are_not_compared() {
        let a = scores(&[&[0.2, 0.8]]);
        let b = scores(&[&[0.2, 0.3, 0.5]]);
        assert!(compare(&a, &b).is_err());
    }
}
