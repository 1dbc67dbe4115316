use burn::prelude::*;

use super::{
    contrastive_loss, group_naming_loss, mask_consistency_loss, GatherAll, MaskLossInputs,
};
use crate::error::OvsegError;
use crate::heads::{MultimodalGrouping, ProjectMlp};
use crate::model::OvSegmentor;
use crate::nn::{BatchStats, Draws, RandomStream};
use crate::text::TextEncoder;

/// Weight of the masked-entity loss.
pub const ENTITY_WEIGHT: f64 = 1.0;
/// Weight of the cross-image mask-consistency loss (stage 2).
pub const MASK_WEIGHT: f64 = 0.1;

/// One training batch: normalised images and texts, each tokenised or already encoded.
#[derive(Debug, Clone)]
pub struct TrainBatch<B: Backend> {
    pub images: Tensor<B, 4>,
    pub caption: TextInput<B>,
    /// Every token of the question enters the multimodal block: encoded, it is [B, 77, hidden].
    pub question: TextInput<B>,
    pub answer: TextInput<B>,
    /// Stage 2: the partner images and "A photo of <shared entity>".
    pub cross: Option<CrossPair<B>>,
    /// ovseg's group-naming loss (not in the paper's recipes).
    pub naming: Option<GroupNaming<B>>,
}

/// What [`group_naming_loss`] reads besides the picture's groups.
#[derive(Debug, Clone)]
pub struct GroupNaming<B: Backend> {
    /// "a photo of a {class}." for the C entity classes the batch's captions name.
    pub prompts: TextInput<B>,
    /// [B, C]: 1 where the caption names the class.
    pub positives: Tensor<B, 2>,
    /// The number of ones in `positives` (at least one).
    pub count: usize,
    /// Its weight in the total.
    pub weight: f64,
}

#[derive(Debug, Clone)]
pub struct CrossPair<B: Backend> {
    pub images: Tensor<B, 4>,
    pub entity: TextInput<B>,
}

/// A text of the training step as the text encoder takes it, or as a frozen text encoder
/// already turned it into hidden states (cached per text by the trainer, so a frozen encoder
/// is not run again on a text it has seen).
#[derive(Debug, Clone)]
pub enum TextInput<B: Backend> {
    /// Token ids and attention mask, [B, L] each.
    Tokens(Tensor<B, 2, Int>, Tensor<B, 2, Int>),
    /// The encoder's last hidden state [B, L, hidden]; L may be 1 (the [CLS] row alone) where
    /// only the text embedding is read.
    Encoded(Tensor<B, 3>),
}

impl<B: Backend> From<(Tensor<B, 2, Int>, Tensor<B, 2, Int>)> for TextInput<B> {
    fn from((ids, mask): (Tensor<B, 2, Int>, Tensor<B, 2, Int>)) -> Self {
        Self::Tokens(ids, mask)
    }
}

impl<B: Backend> TextInput<B> {
    /// The last hidden state [B, L, hidden].
    pub fn hidden(&self, encoder: &TextEncoder<B>) -> Tensor<B, 3> {
        match self {
            Self::Tokens(ids, mask) => encoder.forward(ids.clone(), mask.clone()),
            Self::Encoded(hidden) => hidden.clone(),
        }
    }

    /// The [CLS] hidden state [B, hidden], the text embedding before projection.
    pub fn cls(&self, encoder: &TextEncoder<B>) -> Tensor<B, 2> {
        match self {
            Self::Tokens(ids, mask) => encoder.forward_cls(ids.clone(), mask.clone()),
            Self::Encoded(hidden) => {
                let [b, _, h] = hidden.dims();
                hidden.clone().slice([0..b, 0..1, 0..h]).reshape([b, h])
            }
        }
    }
}

/// How to run the step: `training` switches Gumbel noise, drop-path and BatchNorm batch
/// statistics on; `gather` supplies the global batch for the contrastive terms.
pub struct LossOptions<'a, B: Backend> {
    pub training: bool,
    pub gather: &'a dyn GatherAll<B>,
}

#[derive(Debug, Clone)]
pub struct Losses<B: Backend> {
    pub matching: Tensor<B, 1>,
    pub entity: Tensor<B, 1>,
    pub mask: Option<Tensor<B, 1>>,
    pub naming: Option<Tensor<B, 1>>,
    /// matching + entity + 0.1 * mask (+ the group-naming weight * naming).
    pub total: Tensor<B, 1>,
}

impl<B: Backend> OvSegmentor<B> {
    /// Forward of one training step: the matching and masked-entity losses, plus the
    /// mask-consistency loss when the batch has cross pairs (stage 2). Training draws its noise
    /// from the backend's generator; the trainer uses [`Self::losses_with`].
    pub fn losses(
        &self,
        batch: &TrainBatch<B>,
        options: &LossOptions<'_, B>,
    ) -> Result<Losses<B>, OvsegError> {
        self.losses_with(batch, options, None)
    }

    /// [`Self::losses`] with, in training, the Gumbel noise and drop-path masks of both image
    /// encoders from `stream` (a stream for this batch's rows of the global batch; `None`: the
    /// backend's generator). The heads have no drop-path and draw nothing.
    pub fn losses_with(
        &self,
        batch: &TrainBatch<B>,
        options: &LossOptions<'_, B>,
        stream: Option<&RandomStream>,
    ) -> Result<Losses<B>, OvsegError> {
        let training = options.training;
        let draws = match training {
            true => Draws::training(stream),
            false => Draws::Inference,
        };
        let (multimodal, bridge) = self.training_heads(batch)?;
        let scale = self.scale();
        let stats = if training {
            BatchStats::Batch(options.gather)
        } else {
            BatchStats::Running
        };
        let encode_text = |text: &TextInput<B>| {
            self.text_projector
                .forward_with(text.cls(&self.text_encoder), stats)
        };

        let image = self.img_encoder.forward_with(batch.images.clone(), draws);
        let image_x = self.img_projector.forward_with(image.pooled.clone(), stats);
        let caption = encode_text(&batch.caption);
        let matching = contrastive_loss(image_x, caption, scale.clone(), options.gather);

        let question = batch.question.hidden(&self.text_encoder);
        let question = match &self.align_proj_text {
            Some(p) => p.forward(question),
            None => question,
        };
        let visual = match &self.align_proj_img {
            Some(p) => p.forward(image.segments.clone()),
            None => image.segments.clone(),
        };
        let answer_vec = bridge.forward_with(multimodal.forward(visual, question, training), stats);
        let answer = encode_text(&batch.answer);
        let entity = contrastive_loss(answer_vec, answer, scale.clone(), options.gather);

        // Projected once: the projector's BatchNorm moves its running statistics per call.
        let groups = (batch.cross.is_some() || batch.naming.is_some()).then(|| {
            self.img_projector
                .forward_tokens_with(image.segments.clone(), stats)
        });
        let mask = batch.cross.as_ref().map(|cross| {
            let momentum = self.img_encoder_momentum.as_ref().expect("checked above");
            let partner = momentum.forward_with(cross.images.clone(), draws);
            let entity_text = encode_text(&cross.entity).detach();
            let groups = groups.clone().expect("projected above");
            let similarity = groups
                .matmul(entity_text.unsqueeze_dim(2))
                .squeeze_dim::<2>(2);
            let squeeze = |t: Tensor<B, 4>| t.squeeze_dim::<3>(1);
            mask_consistency_loss(MaskLossInputs {
                q_online: squeeze(image.assignment.q.clone()),
                q_momentum: squeeze(partner.assignment.q),
                k_momentum: squeeze(partner.assignment.k),
                group_entity_similarity: similarity,
                upsample_to: self.img_encoder.training_size(),
            })
        });

        let naming = batch.naming.as_ref().map(|naming| {
            let groups = groups.clone().expect("projected above");
            let prompts = encode_text(&naming.prompts);
            let loss = group_naming_loss(
                groups,
                prompts,
                naming.positives.clone(),
                naming.count,
                scale.clone(),
            );
            (loss, naming.weight)
        });

        Ok(Losses::combine(matching, entity, mask, naming))
    }

    /// The entity head and bridge projector, and the momentum encoder if `batch` needs it.
    fn training_heads(
        &self,
        batch: &TrainBatch<B>,
    ) -> Result<(&MultimodalGrouping<B>, &ProjectMlp<B>), OvsegError> {
        let heads = (
            self.multimodal_groupingblock.as_ref(),
            self.bridge_projector.as_ref(),
        );
        let (Some(multimodal), Some(bridge)) = heads else {
            return Err(OvsegError::Input(
                "this model has no training heads (it was exported for inference only)".into(),
            ));
        };
        if batch.cross.is_some() && self.img_encoder_momentum.is_none() {
            return Err(OvsegError::Input(
                "cross-image pairs need the momentum image encoder".into(),
            ));
        }
        Ok((multimodal, bridge))
    }
}

impl<B: Backend> Losses<B> {
    /// The weighted total of the terms (`naming` with its weight).
    fn combine(
        matching: Tensor<B, 1>,
        entity: Tensor<B, 1>,
        mask: Option<Tensor<B, 1>>,
        naming: Option<(Tensor<B, 1>, f64)>,
    ) -> Self {
        let mut total = matching.clone() + entity.clone() * ENTITY_WEIGHT;
        if let Some(m) = &mask {
            total = total + m.clone() * MASK_WEIGHT;
        }
        if let Some((n, weight)) = &naming {
            total = total + n.clone() * *weight;
        }
        Losses {
            matching,
            entity,
            mask,
            naming: naming.map(|(n, _)| n),
            total,
        }
    }
}
