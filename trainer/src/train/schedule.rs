//! The learning rate of every optimizer step: timm's `CosineLRScheduler` as the reference builds
//! it (`t_in_epochs=False`, one cycle, `warmup_prefix=False`): a linear warmup from `warmup_lr`
//! to `base_lr` over the first `warmup_steps`, and from step 0 on the cosine curve
//! `min + (base - min) (1 + cos(pi t / total)) / 2`, which the warmup overrides while it lasts.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub warmup_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl CosineSchedule {
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let slope = (self.base_lr - self.warmup_lr) / self.warmup_steps as f64;
            return self.warmup_lr + step as f64 * slope;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let progress = step as f64 / self.total_steps.max(1) as f64;
        self.min_lr
            + 0.5 * (self.base_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper_stage1() -> CosineSchedule {
        // 1000 steps an epoch, 30 epochs, warmup 2 epochs.
        CosineSchedule {
            base_lr: 6.4e-4,
            warmup_lr: 1.6e-5,
            min_lr: 1.6e-4,
            warmup_steps: 2000,
            total_steps: 30_000,
        }
    }

    #[test]
    fn warmup_is_linear_from_the_warmup_lr() {
        let s = paper_stage1();
        assert_eq!(s.lr(0), 1.6e-5);
        assert!((s.lr(1000) - (1.6e-5 + 0.5 * (6.4e-4 - 1.6e-5))).abs() < 1e-12);
        assert!((s.lr(1999) - (1.6e-5 + 1999.0 * (6.4e-4 - 1.6e-5) / 2000.0)).abs() < 1e-12);
    }

    #[test]
    fn cosine_counts_from_step_zero_as_timm_does() {
        let s = paper_stage1();
        let expected = |t: f64| {
            1.6e-4 + 0.5 * (6.4e-4 - 1.6e-4) * (1.0 + (std::f64::consts::PI * t / 30_000.0).cos())
        };
        for t in [2000usize, 15_000, 29_999] {
            assert!((s.lr(t) - expected(t as f64)).abs() < 1e-15, "step {t}");
        }
        assert!((s.lr(15_000) - 4.0e-4).abs() < 1e-12);
        assert_eq!(s.lr(30_000), 1.6e-4);
    }

    #[test]
    fn no_warmup_starts_at_the_base_rate() {
        let s = CosineSchedule {
            base_lr: 1e-5,
            warmup_lr: 0.0,
            min_lr: 1e-6,
            warmup_steps: 0,
            total_steps: 100,
        };
        assert_eq!(s.lr(0), 1e-5);
        assert!(s.lr(50) < 1e-5 && s.lr(50) > 1e-6);
    }
}
