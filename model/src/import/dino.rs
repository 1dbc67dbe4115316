//! DINO ViT weights as the image encoder's starting point (the paper's initialisation): ViT
//! blocks `0..d0` become `layers.0.blocks`, the next `d1` become `layers.1.blocks`; the patch
//! embedding, the final norm and the position embedding (without its cls position) load as they
//! are; group tokens and grouping blocks keep their fresh initialisation.

use std::path::Path;

use burn::prelude::*;

use super::{load_module, mapping, ImportReport, PthSource, TensorSource};
use crate::error::OvsegError;
use crate::vision::GroupVit;

/// A DINO state dict (bare, or under `teacher`/`student` with `backbone.`/`module.` prefixes)
/// seen with GroupViT's key names.
pub struct DinoSource<S: TensorSource> {
    inner: S,
    prefix: String,
}

impl<S: TensorSource> DinoSource<S> {
    pub fn new(inner: S) -> Self {
        let keys = inner.keys();
        let prefix = ["module.backbone.", "backbone.", "module.", ""]
            .into_iter()
            .find(|p| keys.iter().any(|k| *k == format!("{p}pos_embed")))
            .unwrap_or("")
            .to_string();
        Self { inner, prefix }
    }

    fn inner_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl<S: TensorSource> TensorSource for DinoSource<S> {
    fn keys(&self) -> Vec<String> {
        self.inner
            .keys()
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
            .collect()
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        let shape = self.inner.shape(&self.inner_key(key))?;
        if key == "pos_embed" {
            // [1, 1 + N, C] -> [N, C]: the cls position is dropped.
            let c = *shape.last()?;
            let n = shape.iter().product::<usize>() / c;
            return Some(vec![n.checked_sub(1)?, c]);
        }
        Some(shape)
    }

    fn read_f32(&self, key: &str) -> Result<Vec<f32>, OvsegError> {
        let mut values = self.inner.read_f32(&self.inner_key(key))?;
        if key == "pos_embed" {
            let c = self
                .inner
                .shape(&self.inner_key(key))
                .and_then(|s| s.last().copied());
            values.drain(..c.unwrap_or(0));
        }
        Ok(values)
    }
}

/// GroupViT key -> DINO key, or `None` for parts DINO does not have.
fn dino_key(path: &str, depths: &[usize]) -> Option<String> {
    let key = mapping::torch_key(path);
    if key.starts_with("patch_embed.") || key.starts_with("norm.") || key == "pos_embed" {
        return Some(key);
    }
    let rest = key.strip_prefix("layers.")?;
    let (stage, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("blocks.")?;
    let (block, rest) = rest.split_once('.')?;
    let stage: usize = stage.parse().ok()?;
    let block: usize = block.parse().ok()?;
    let offset: usize = depths[..stage].iter().sum();
    Some(format!("blocks.{}.{rest}", offset + block))
}

fn ignorable_dino_key(key: &str) -> bool {
    key == "cls_token" || key == "mask_token" || key.starts_with("head.")
}

/// Loads DINO weights from `path` (`.pth`) into `encoder`, built with `depths`.
pub fn load_dino_vit<B: Backend>(
    encoder: &mut GroupVit<B>,
    depths: &[usize],
    path: &Path,
) -> Result<ImportReport, OvsegError> {
    let source = DinoSource::new(PthSource::open(path)?);
    load_dino_from(encoder, depths, &source, &path.display().to_string())
}

pub(crate) fn load_dino_from<B: Backend>(
    encoder: &mut GroupVit<B>,
    depths: &[usize],
    source: &dyn TensorSource,
    origin: &str,
) -> Result<ImportReport, OvsegError> {
    load_module(
        encoder,
        source,
        origin,
        |path| dino_key(path, depths),
        ignorable_dino_key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OvsegConfig;
    use burn::backend::Flex;
    use std::collections::BTreeMap;

    /// A DINO-shaped state dict in memory, built from the keys a ViT with `blocks` blocks has.
    struct Memory(BTreeMap<String, (Vec<usize>, Vec<f32>)>);

    impl TensorSource for Memory {
        fn keys(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
        }
        fn shape(&self, key: &str) -> Option<Vec<usize>> {
            self.0.get(key).map(|(s, _)| s.clone())
        }
        fn read_f32(&self, key: &str) -> Result<Vec<f32>, OvsegError> {
            Ok(self.0[key].1.clone())
        }
    }

    #[test]
    fn dino_blocks_fill_both_stages_and_the_cls_position_is_dropped() {
        let config = OvsegConfig::tiny();
        let depths = config.image.depths.clone();
        let device = Default::default();
        let mut encoder = config.image.init::<Flex>(&device);
        let c = config.image.embed_dim;
        let n = config.image.grid() * config.image.grid();
        let mut tensors = BTreeMap::new();
        let mut put = |key: &str, shape: Vec<usize>, fill: f32| {
            let len = shape.iter().product();
            tensors.insert(
                format!("backbone.{key}"),
                (shape, (0..len).map(|i| fill + i as f32 * 1e-6).collect()),
            );
        };
        put("cls_token", vec![1, 1, c], 9.0);
        put("pos_embed", vec![1, n + 1, c], 0.5);
        put("patch_embed.proj.weight", vec![c, 3, 16, 16], 0.1);
        put("patch_embed.proj.bias", vec![c], 0.2);
        put("norm.weight", vec![c], 1.5);
        put("norm.bias", vec![c], 0.3);
        put("head.weight", vec![10, c], 0.0);
        let total: usize = depths.iter().sum();
        for b in 0..total {
            let v = b as f32;
            put(&format!("blocks.{b}.norm1.weight"), vec![c], v);
            put(&format!("blocks.{b}.norm1.bias"), vec![c], v);
            put(&format!("blocks.{b}.attn.qkv.weight"), vec![3 * c, c], v);
            put(&format!("blocks.{b}.attn.qkv.bias"), vec![3 * c], v);
            put(&format!("blocks.{b}.attn.proj.weight"), vec![c, c], v);
            put(&format!("blocks.{b}.attn.proj.bias"), vec![c], v);
            put(&format!("blocks.{b}.norm2.weight"), vec![c], v);
            put(&format!("blocks.{b}.norm2.bias"), vec![c], v);
            put(&format!("blocks.{b}.mlp.fc1.weight"), vec![4 * c, c], v);
            put(&format!("blocks.{b}.mlp.fc1.bias"), vec![4 * c], v);
            put(&format!("blocks.{b}.mlp.fc2.weight"), vec![c, 4 * c], v);
            put(&format!("blocks.{b}.mlp.fc2.bias"), vec![c], v);
        }
        let group_token_before = encoder.layers[0]
            .group_token
            .as_ref()
            .unwrap()
            .val()
            .into_data();
        let source = DinoSource::new(Memory(tensors));
        let report = load_dino_from(&mut encoder, &depths, &source, "memory").unwrap();
        assert!(report.ignored.contains(&"cls_token".to_string()));
        // Block 2 of DINO (the first of stage 1 with depths [2, 2]) filled layers.1.blocks.0.
        let norm1: Vec<f32> = encoder.layers[1].blocks[0]
            .norm1
            .gamma
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        assert!(norm1.iter().all(|&x| (x - 2.0).abs() < 1e-3));
        // The position embedding starts after the cls row: value 0.5 + c * 1e-6.
        let pos: Vec<f32> = encoder.pos_embed.val().into_data().to_vec().unwrap();
        assert_eq!(pos.len(), n * c);
        assert!((pos[0] - (0.5 + c as f32 * 1e-6)).abs() < 1e-7);
        // Group tokens are not part of DINO and keep their initialisation.
        encoder.layers[0]
            .group_token
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .assert_eq(&group_token_before, true);
    }
}
