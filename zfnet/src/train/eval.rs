//! Evaluation: top-1/top-5 accuracy and a confusion matrix over a labelled set (centre crops).

use super::data::load_batch;
use crate::dataset::{FolderDataset, LabelledImage};
use crate::manifest::{ClassAccuracy, ClassEntry, Preprocess};
use crate::model::ZfNet;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub images: usize,
    pub top1: f32,
    pub top5: f32,
    /// `confusion[true class][predicted class]` image counts (empty when not measured).
    #[serde(default)]
    pub confusion: Vec<Vec<u32>>,
}

impl EvalResult {
    /// Each class's images and top-1, and the class it was most often mistaken for.
    pub fn per_class(&self, classes: &[ClassEntry]) -> Vec<ClassAccuracy> {
        self.confusion
            .iter()
            .zip(classes)
            .enumerate()
            .map(|(i, (row, class))| {
                let images: u32 = row.iter().sum();
                let mistaken = row
                    .iter()
                    .enumerate()
                    .filter(|&(j, &n)| j != i && n > 0)
                    .max_by_key(|&(j, &n)| (n, std::cmp::Reverse(j)))
                    .and_then(|(j, &n)| Some((classes.get(j)?.label.clone(), n as usize)));
                ClassAccuracy {
                    label: class.label.clone(),
                    images: images as usize,
                    top1: row.get(i).map_or(0.0, |&c| c as f32 / images.max(1) as f32),
                    mistaken_for: mistaken,
                }
            })
            .collect()
    }
}

/// A batch of logits `[n, classes]` as host rows.
pub(crate) fn logit_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// Top-1 and top-5 counts of logit `rows` against `labels`.
pub(crate) fn top_counts(rows: &[Vec<f32>], labels: &[u32]) -> (usize, usize) {
    let mut top1 = 0;
    let mut top5 = 0;
    for (row, &label) in rows.iter().zip(labels) {
        let target = row[label as usize];
        let better = row.iter().filter(|&&v| v > target).count();
        top1 += usize::from(better == 0);
        top5 += usize::from(better < 5);
    }
    (top1, top5)
}

/// Top-1 / top-5 accuracy over a dataset with centre crops; `progress` gets images done.
pub fn evaluate(
    net: &ZfNet,
    set: &FolderDataset,
    p: &Preprocess,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<EvalResult> {
    let (mut images, mut top1, mut top5) = (0, 0, 0);
    let classes = set.classes.len();
    let mut confusion = vec![vec![0u32; classes]; classes];
    let indexed: Vec<(usize, &LabelledImage)> = set.samples.iter().enumerate().collect();
    for chunk in indexed.chunks(batch.max(1)) {
        if let Some((x, labels)) = load_batch(chunk, p, None, net.device())? {
            let logits = net.forward(&x)?;
            let labels = labels.to_vec1::<u32>()?;
            let rows = logit_rows(&logits)?;
            let (a, b) = top_counts(&rows, &labels);
            for (row, &label) in rows.iter().zip(&labels) {
                let predicted = crate::ops::argmax(row).0;
                if let Some(cell) = confusion
                    .get_mut(label as usize)
                    .and_then(|r| r.get_mut(predicted))
                {
                    *cell += 1;
                }
            }
            images += labels.len();
            top1 += a;
            top5 += b;
        }
        progress(chunk.len());
    }
    if images == 0 {
        return Err(Error::Dataset(format!(
            "{}: none of the images could be read",
            set.root.display()
        )));
    }
    Ok(EvalResult {
        images,
        top1: top1 as f32 / images as f32,
        top5: top5 as f32 / images as f32,
        confusion,
    })
}
