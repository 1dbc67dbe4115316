//! How a global batch is laid out over devices, accumulation steps and machines, and which part
//! of it each machine makes (docs/training.md, "Several GPUs, several machines").

use anyhow::{bail, Result};

/// Where micro-batch `micro` of device `rank` (of `world`) starts in the global batch, each
/// holding `rows` samples: micro-step `a` trains rows `(a * world + r) * rows..` on device `r`,
/// so one micro-step over all devices covers a contiguous block. The devices key their random
/// draws by these global indices.
pub fn micro_batch_start(micro: usize, rank: usize, world: usize, rows: usize) -> usize {
    (micro * world + rank) * rows
}

/// One machine's part of a run on `nodes` machines with `devices` devices each: the loader of
/// machine `node` decodes only the rows its own devices train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub node: usize,
    pub nodes: usize,
    /// Devices on each machine.
    pub devices: usize,
    /// Micro-batches in a step (gradient accumulation).
    pub accumulation: usize,
}

impl Share {
    /// One machine making every row.
    pub const WHOLE: Share = Share {
        node: 0,
        nodes: 1,
        devices: 1,
        accumulation: 1,
    };

    pub fn validate(&self, global_batch: usize) -> Result<()> {
        if self.nodes == 0 || self.devices == 0 || self.accumulation == 0 {
            bail!("machines, devices and accumulation steps must each be at least 1");
        }
        if self.node >= self.nodes {
            bail!(
                "machine {} of {}: ranks count from 0",
                self.node,
                self.nodes
            );
        }
        let parts = self.nodes * self.devices * self.accumulation;
        if global_batch == 0 || global_batch % parts != 0 {
            bail!(
                "a global batch of {global_batch} samples cannot be split over {} machines x {} \
                 devices x {} accumulation steps",
                self.nodes,
                self.devices,
                self.accumulation
            );
        }
        Ok(())
    }

    /// Rows of a global batch of `size` this machine makes.
    pub fn rows_per_node(&self, size: usize) -> usize {
        size / self.nodes
    }

    /// Rows one device trains in one micro-step.
    pub fn micro_rows(&self, size: usize) -> usize {
        size / (self.nodes * self.devices * self.accumulation)
    }

    /// The offsets in a global batch of `size` this machine makes, in the order its devices take
    /// them: micro-step by micro-step, device by device ([`micro_batch_start`]), so that the
    /// machine's batch splits over its own devices as a one-machine batch does.
    pub fn rows(&self, size: usize) -> Vec<usize> {
        let world = self.nodes * self.devices;
        let b = self.micro_rows(size);
        let mut rows = Vec::with_capacity(size / self.nodes);
        for micro in 0..self.accumulation {
            for device in 0..self.devices {
                let start = micro_batch_start(micro, self.node * self.devices + device, world, b);
                rows.extend(start..start + b);
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_share_every_row_once() {
        for (nodes, devices, accumulation) in
            [(1, 1, 1), (1, 2, 3), (2, 1, 1), (2, 2, 2), (3, 2, 1)]
        {
            let size = nodes * devices * accumulation * 2;
            let mut all = Vec::new();
            for node in 0..nodes {
                let share = Share {
                    node,
                    nodes,
                    devices,
                    accumulation,
                };
                share.validate(size).unwrap();
                let rows = share.rows(size);
                assert_eq!(rows.len(), share.rows_per_node(size));
                all.extend(rows);
            }
            all.sort();
            assert_eq!(all, (0..size).collect::<Vec<_>>());
        }
        // One machine keeps the batch as it is.
        let share = Share {
            devices: 2,
            accumulation: 2,
            ..Share::WHOLE
        };
        assert_eq!(share.rows(8), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_machine_batch_splits_like_a_one_machine_batch() {
        // Machine 1 of 2, 2 devices each, 2 micro-steps of 1 row: micro-step 0 is rows 0..4 of
        // the global batch (devices 0..3), micro-step 1 rows 4..8; machine 1 holds devices 2, 3.
        let share = Share {
            node: 1,
            nodes: 2,
            devices: 2,
            accumulation: 2,
        };
        assert_eq!(share.rows(8), vec![2, 3, 6, 7]);
        assert!(share.validate(6).is_err());
        assert!(Share { node: 2, ..share }.validate(8).is_err());
    }
}
