use serde::{Deserialize, Serialize};

/// Ground-truth value that is never scored.
pub const IGNORE_INDEX: u32 = 255;

/// How a dataset's stored labels become class indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelTransform {
    /// Stored values are class indices (255 ignored).
    #[default]
    Identity,
    /// ADE20K's `reduce_zero_label`: 0 ("other") becomes 255 and every class moves down by one.
    ReduceZero,
}

impl LabelTransform {
    pub fn apply(self, stored: u32) -> u32 {
        match self {
            Self::Identity => stored,
            Self::ReduceZero => match stored {
                0 => IGNORE_INDEX,
                v => {
                    let v = v - 1;
                    if v == IGNORE_INDEX - 1 {
                        IGNORE_INDEX
                    } else {
                        v
                    }
                }
            },
        }
    }
}

/// Per-class pixel counts summed over a dataset, as mmseg's `intersect_and_union` accumulates
/// them: intersection, prediction area and label area (ignored pixels excluded everywhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IouAccumulator {
    pub intersect: Vec<u64>,
    pub pred_area: Vec<u64>,
    pub label_area: Vec<u64>,
}

/// mIoU, mean accuracy and pixel accuracy in percent, with per-class IoU and accuracy (NaN for
/// classes absent from both prediction and label, left out of the means).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationScores {
    pub miou: f64,
    pub macc: f64,
    pub aacc: f64,
    pub iou: Vec<f64>,
    pub acc: Vec<f64>,
}

/// Mean of the values that are not NaN (NaN when none is).
fn nanmean(v: &[f64]) -> f64 {
    let kept: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if kept.is_empty() {
        f64::NAN
    } else {
        kept.iter().sum::<f64>() / kept.len() as f64
    }
}

impl SegmentationScores {
    /// mIoU (percent) over every class but class 0, the background, by the same rule as `miou`.
    pub fn foreground_miou(&self) -> f64 {
        nanmean(self.iou.get(1..).unwrap_or_default())
    }
}

impl IouAccumulator {
    pub fn new(num_classes: usize) -> Self {
        Self {
            intersect: vec![0; num_classes],
            pred_area: vec![0; num_classes],
            label_area: vec![0; num_classes],
        }
    }

    pub fn num_classes(&self) -> usize {
        self.intersect.len()
    }

    /// Adds one image: `pred` class indices and `label` ground truth (already transformed).
    /// Pixels labelled [`IGNORE_INDEX`] or beyond the class count are skipped.
    pub fn add(&mut self, pred: &[u32], label: &[u32]) {
        assert_eq!(pred.len(), label.len(), "prediction and label sizes differ");
        let n = self.num_classes() as u32;
        for (&p, &l) in pred.iter().zip(label) {
            if l == IGNORE_INDEX || l >= n {
                continue;
            }
            self.label_area[l as usize] += 1;
            if p < n {
                self.pred_area[p as usize] += 1;
                if p == l {
                    self.intersect[l as usize] += 1;
                }
            }
        }
    }

    /// The same labels as answered by predicting class 0 (background) for every pixel: the
    /// trivial answer a segmentation of mostly-background pictures has to beat.
    pub fn all_background(&self) -> Self {
        let total: u64 = self.label_area.iter().sum();
        let mut out = Self::new(self.num_classes());
        out.label_area = self.label_area.clone();
        if let (Some(pred), Some(inter)) = (out.pred_area.first_mut(), out.intersect.first_mut()) {
            *pred = total;
            *inter = self.label_area[0];
        }
        out
    }

    pub fn scores(&self) -> SegmentationScores {
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                f64::NAN
            } else {
                a as f64 / b as f64
            }
        };
        let iou: Vec<f64> = (0..self.num_classes())
            .map(|c| {
                ratio(
                    self.intersect[c],
                    self.pred_area[c] + self.label_area[c] - self.intersect[c],
                )
            })
            .collect();
        let acc: Vec<f64> = (0..self.num_classes())
            .map(|c| ratio(self.intersect[c], self.label_area[c]))
            .collect();
        let total_label: u64 = self.label_area.iter().sum();
        let total_intersect: u64 = self.intersect.iter().sum();
        SegmentationScores {
            miou: nanmean(&iou) * 100.0,
            macc: nanmean(&acc) * 100.0,
            aacc: ratio(total_intersect, total_label) * 100.0,
            iou: iou.iter().map(|x| x * 100.0).collect(),
            acc: acc.iter().map(|x| x * 100.0).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_background_scores_the_background_share() {
        // 3 classes: 6 labelled pixels, 3 of them background.
        let mut acc = IouAccumulator::new(3);
        acc.add(&[1, 1, 1, 1, 1, 1], &[0, 0, 0, 1, 2, 2]);
        let s = acc.all_background().scores();
        // background IoU 3/6; classes 1 and 2 are labelled but never predicted: IoU 0.
        assert!((s.miou - 50.0 / 3.0).abs() < 1e-9, "{}", s.miou);
        assert_eq!(s.iou[1], 0.0);
        assert!((s.aacc - 50.0).abs() < 1e-9);
    }

    #[test]
    fn hand_computed_ious() {
        // 3 classes; label row-major with one ignored pixel.
        let label = [0, 0, 1, 1, 2, 255];
        let pred = [0, 1, 1, 1, 0, 2];
        let mut acc = IouAccumulator::new(3);
        acc.add(&pred, &label);
        // class 0: inter 1, pred 2, label 2 -> 1/3; class 1: inter 2, pred 3, label 2 -> 2/3;
        // class 2: inter 0, pred 0 (the ignored pixel does not count), label 1 -> 0.
        let s = acc.scores();
        let expect = [100.0 / 3.0, 200.0 / 3.0, 0.0];
        for (a, b) in s.iou.iter().zip(expect) {
            assert!((a - b).abs() < 1e-9, "{:?}", s.iou);
        }
        assert!((s.miou - 100.0 / 3.0).abs() < 1e-9);
        assert!((s.aacc - 60.0).abs() < 1e-9); // 3 of 5 scored pixels
        assert!((s.macc - (50.0 + 100.0 + 0.0) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn absent_classes_are_left_out_of_the_mean() {
        let mut acc = IouAccumulator::new(4);
        acc.add(&[0, 0, 1], &[0, 0, 1]);
        let s = acc.scores();
        assert!(s.iou[2].is_nan() && s.iou[3].is_nan());
        assert_eq!(s.miou, 100.0);
    }

    #[test]
    fn ade_shift() {
        let t = LabelTransform::ReduceZero;
        assert_eq!([0, 1, 150, 255].map(|v| t.apply(v)), [255, 0, 149, 255]);
        assert_eq!(LabelTransform::Identity.apply(7), 7);
    }

    #[test]
    fn accumulation_matches_brute_force() {
        let mut seed = 7u64;
        let mut next = |m: u32| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 33) % m as u64) as u32
        };
        let classes = 5;
        let images: Vec<(Vec<u32>, Vec<u32>)> = (0..6)
            .map(|_| {
                let n = 50 + next(50) as usize;
                let pred = (0..n).map(|_| next(classes)).collect();
                let label = (0..n)
                    .map(|_| if next(10) == 0 { 255 } else { next(classes) })
                    .collect();
                (pred, label)
            })
            .collect();
        let mut acc = IouAccumulator::new(classes as usize);
        for (p, l) in &images {
            acc.add(p, l);
        }
        let all: Vec<(u32, u32)> = images
            .iter()
            .flat_map(|(p, l)| p.iter().copied().zip(l.iter().copied()))
            .collect();
        for c in 0..classes {
            let scored = all.iter().filter(|(_, l)| *l != 255);
            let inter = scored.clone().filter(|(p, l)| *p == c && *l == c).count() as f64;
            let union = scored.filter(|(p, l)| *p == c || *l == c).count() as f64;
            let iou = acc.scores().iou[c as usize];
            assert!((iou - 100.0 * inter / union).abs() < 1e-9);
        }
    }
}
