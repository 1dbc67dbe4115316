use serde::{Deserialize, Serialize};

/// Running top-1 / top-5 accuracy of zero-shot classification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    pub total: u64,
    pub top1: u64,
    pub top5: u64,
}

impl TopK {
    /// Adds one image: its class scores and the true class.
    pub fn add(&mut self, scores: &[f32], truth: usize) {
        let better = scores.iter().filter(|&&s| s > scores[truth]).count();
        self.total += 1;
        self.top1 += u64::from(better == 0);
        self.top5 += u64::from(better < 5);
    }

    pub fn top1_percent(&self) -> f64 {
        100.0 * self.top1 as f64 / self.total.max(1) as f64
    }

    pub fn top5_percent(&self) -> f64 {
        100.0 * self.top5 as f64 / self.total.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks() {
        let mut t = TopK::default();
        t.add(&[0.1, 0.9, 0.3], 1); // top-1
        t.add(&[0.9, 0.1, 0.3, 0.2, 0.25, 0.05, 0.01], 1); // rank 5 of 7: top-5 only
        t.add(&[0.9, 0.0, 0.3, 0.2, 0.25, 0.05, 0.01], 1); // rank 7: neither
        assert_eq!((t.total, t.top1, t.top5), (3, 1, 2));
    }
}
