//! Evaluation metrics, computed as scikit-learn computes them: accuracy, log loss
//! (probabilities clipped to [ε, 1 − ε]), macro F1 (over the labels present in the true or
//! predicted values; 0 where undefined) and the confusion matrix (rows = true, columns =
//! predicted, in label order). Multi-label: `accuracy` is subset accuracy, `log_loss` and
//! `macro_f1` the mean over labels of the binary ones, and `per_label` holds each label's
//! metrics with scikit-learn's `multilabel_confusion_matrix` layout `[[tn, fp], [fn, tp]]`.

use serde::{Deserialize, Serialize};

use super::design::Matrix;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    /// `"test"` (the held-out split) or `"train"` (no split: the training rows).
    pub evaluated_on: String,
    pub train_rows: usize,
    pub test_rows: usize,
    pub accuracy: f64,
    pub log_loss: f64,
    pub macro_f1: f64,
    /// Output columns, in order: class labels, or target names for multi-label.
    pub labels: Vec<String>,
    /// Multiclass/binary: `[true][predicted]` counts over `labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    /// Multi-label: one entry per label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_label: Vec<LabelMetrics>,
    /// Whether the optimiser met `tol` (all labels, for multi-label) before `max_iter`.
    pub converged: bool,
    /// Optimiser iterations (summed over labels for multi-label).
    pub iterations: u64,
    /// The final value of the training objective (summed over labels for multi-label).
    pub objective: f64,
    /// scikit-learn's ConvergenceWarning, when it applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelMetrics {
    pub label: String,
    pub accuracy: f64,
    pub log_loss: f64,
    pub f1: f64,
    /// `[[tn, fp], [fn, tp]]`.
    pub confusion_matrix: [[u64; 2]; 2],
}

/// Scores of one evaluation, before the optimiser's facts are added.
pub struct Scores {
    pub accuracy: f64,
    pub log_loss: f64,
    pub macro_f1: f64,
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    pub per_label: Vec<LabelMetrics>,
}

fn clip(p: f64) -> f64 {
    p.clamp(f64::EPSILON, 1.0 - f64::EPSILON)
}

fn argmax(row: &[f64]) -> usize {
    crate::model::batch::argmax(row).unwrap_or(0)
}

fn f1(tp: u64, fp: u64, fn_: u64) -> f64 {
    let denominator = 2 * tp + fp + fn_;
    if denominator == 0 {
        0.0
    } else {
        2.0 * tp as f64 / denominator as f64
    }
}

/// Multiclass (binary included): `truth` class indices, `proba` rows over `k` classes.
pub fn classes(truth: &[usize], proba: &Matrix, k: usize) -> Scores {
    let n = truth.len().max(1) as f64;
    let mut confusion = vec![vec![0u64; k]; k];
    let mut correct = 0usize;
    let mut log_loss = 0.0;
    for (&t, row) in truth.iter().zip(proba.iter_rows()) {
        let predicted = argmax(row);
        correct += usize::from(predicted == t);
        // A row's probabilities are renormalised after clipping, as scikit-learn does.
        let total: f64 = row.iter().map(|&p| clip(p)).sum();
        log_loss -= (clip(row.get(t).copied().unwrap_or(0.0)) / total).ln();
        if let Some(cell) = confusion.get_mut(t).and_then(|r| r.get_mut(predicted)) {
            *cell += 1;
        }
    }
    let mut f1_sum = 0.0;
    let mut present = 0usize;
    for c in 0..k {
        let tp = confusion
            .get(c)
            .and_then(|r| r.get(c))
            .copied()
            .unwrap_or(0);
        let actual: u64 = confusion.get(c).map_or(0, |r| r.iter().sum());
        let predicted: u64 = confusion.iter().filter_map(|r| r.get(c)).sum();
        if actual + predicted > 0 {
            present += 1;
            f1_sum += f1(tp, predicted - tp, actual - tp);
        }
    }
    Scores {
        accuracy: correct as f64 / n,
        log_loss: log_loss / n,
        macro_f1: if present == 0 {
            0.0
        } else {
            f1_sum / present as f64
        },
        confusion_matrix: Some(confusion),
        per_label: Vec::new(),
    }
}

/// Multi-label: `truth[l][i]` flags and `proba[i][l]` = P(label l = 1).
pub fn multi_label(names: &[String], truth: &[Vec<bool>], proba: &Matrix) -> Scores {
    let n = proba.rows;
    let mut per_label = Vec::with_capacity(names.len());
    let mut all_right = vec![true; n];
    for (l, (name, flags)) in names.iter().zip(truth).enumerate() {
        let mut m = [[0u64; 2]; 2];
        let mut log_loss = 0.0;
        for (i, (&t, row)) in flags.iter().zip(proba.iter_rows()).enumerate() {
            let p = row.get(l).copied().unwrap_or(0.0);
            let predicted = p > 0.5;
            if let Some(cell) = m
                .get_mut(usize::from(t))
                .and_then(|r| r.get_mut(usize::from(predicted)))
            {
                *cell += 1;
            }
            if predicted != t {
                if let Some(ok) = all_right.get_mut(i) {
                    *ok = false;
                }
            }
            log_loss -= if t { clip(p).ln() } else { clip(1.0 - p).ln() };
        }
        let [[tn, fp], [fn_, tp]] = m;
        per_label.push(LabelMetrics {
            label: name.clone(),
            accuracy: (tn + tp) as f64 / n.max(1) as f64,
            log_loss: log_loss / n.max(1) as f64,
            f1: f1(tp, fp, fn_),
            confusion_matrix: m,
        });
    }
    let labels = per_label.len().max(1) as f64;
    Scores {
        accuracy: all_right.iter().filter(|ok| **ok).count() as f64 / n.max(1) as f64,
        log_loss: per_label.iter().map(|m| m.log_loss).sum::<f64>() / labels,
        macro_f1: per_label.iter().map(|m| m.f1).sum::<f64>() / labels,
        confusion_matrix: None,
        per_label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: Vec<Vec<f64>>) -> Matrix {
        Matrix {
            rows: rows.len(),
            cols: rows.first().map_or(0, Vec::len),
            data: rows.concat(),
        }
    }

    #[test]
    fn multiclass_scores() {
        let truth = [0, 1, 2, 2];
        let proba = matrix(vec![
            vec![0.8, 0.1, 0.1],
            vec![0.2, 0.7, 0.1],
            vec![0.1, 0.6, 0.3],
            vec![0.1, 0.1, 0.8],
        ]);
        let s = classes(&truth, &proba, 3);
        assert_eq!(s.accuracy, 0.75);
        let expected = -(0.8f64.ln() + 0.7f64.ln() + 0.3f64.ln() + 0.8f64.ln()) / 4.0;
        assert!((s.log_loss - expected).abs() < 1e-12);
        // F1: class 0 = 1, class 1 = 2/3, class 2 = 2/3.
        assert!((s.macro_f1 - (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(s.confusion_matrix.unwrap()[2], vec![0, 1, 1]);
    }

    #[test]
    fn multi_label_scores() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let truth = vec![vec![true, true], vec![false, true]];
        let proba = matrix(vec![vec![0.9, 0.3], vec![0.4, 0.7]]);
        let s = multi_label(&names, &truth, &proba);
        assert_eq!(s.accuracy, 0.5);
        assert_eq!(s.per_label[0].confusion_matrix, [[0, 0], [1, 1]]);
        assert_eq!(s.per_label[1].confusion_matrix, [[1, 0], [0, 1]]);
    }
}
