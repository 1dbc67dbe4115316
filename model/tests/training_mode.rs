//! Training-mode behaviour the fixtures (recorded in eval mode) cannot show: Gumbel
//! straight-through assignment, BatchNorm batch statistics, gradients everywhere, and the
//! momentum encoder's EMA.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use ovseg_model::losses::{CrossPair, GroupNaming, LocalGather, LossOptions, TrainBatch};
use ovseg_model::OvsegConfig;

// NdArray has no bilinear-interpolation backward; Flex (the default CPU backend) has.
type AB = Autodiff<Flex>;

fn config() -> OvsegConfig {
    let mut c = OvsegConfig::tiny();
    c.text.vocab_size = 200;
    c.proj_inner_dim = 128;
    c
}

fn tokens(
    device: &burn::tensor::Device<AB>,
    batch: usize,
) -> (Tensor<AB, 2, Int>, Tensor<AB, 2, Int>) {
    let ids = Tensor::<AB, 2, Int>::random([batch, 12], Distribution::Uniform(1.0, 199.0), device);
    let ids = ids.slice_fill([0..batch, 0..1], 101);
    let mask = Tensor::<AB, 2, Int>::ones([batch, 12], device).slice_fill([0..batch, 9..12], 0);
    (
        ids.clone()
            .mask_where(mask.clone().equal_elem(0), ids.zeros_like()),
        mask,
    )
}

#[test]
fn training_step_has_finite_losses_and_gradients_everywhere() {
    let device = Default::default();
    let model = config().init::<AB>(&device);
    let images =
        |b| Tensor::<AB, 4>::random([b, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    let batch = TrainBatch {
        images: images(3),
        caption: tokens(&device, 3).into(),
        question: tokens(&device, 3).into(),
        answer: tokens(&device, 3).into(),
        cross: Some(CrossPair {
            images: images(3),
            entity: tokens(&device, 3).into(),
        }),
        naming: None,
    };
    let running_before = model.img_projector.norm.running_mean.value().into_data();
    let losses = model
        .losses(
            &batch,
            &LossOptions {
                training: true,
                gather: &LocalGather,
            },
        )
        .unwrap();
    let total: f32 = losses.total.clone().into_scalar();
    let mask: f32 = losses.mask.clone().unwrap().into_scalar();
    assert!(
        total.is_finite() && mask.is_finite() && mask >= 0.0,
        "total {total}, mask {mask}"
    );

    // Batch statistics were used and the running ones moved.
    let running_after = model.img_projector.norm.running_mean.value().into_data();
    assert_ne!(running_before, running_after);

    let grads = losses.total.backward();
    let nonzero = |p: &Param<Tensor<AB, 2>>| -> bool {
        let g = p.grad(&grads).expect("gradient exists");
        g.abs().sum().into_scalar() > 0.0
    };
    let img = &model.img_encoder;
    assert!(
        nonzero(&img.layers[0].blocks[0].attn.qkv.weight),
        "stage-0 block"
    );
    assert!(
        nonzero(
            &img.layers[0]
                .downsample
                .as_ref()
                .unwrap()
                .assign
                .q_proj
                .weight
        ),
        "assignment (straight-through)"
    );
    assert!(
        nonzero(
            &model.text_encoder.transformer.encoder.layer[0]
                .attention
                .self_attn
                .query
                .weight
        ),
        "text encoder"
    );
    assert!(
        nonzero(
            &model.multimodal_groupingblock.as_ref().unwrap().blocks[0]
                .post_attn
                .attn
                .qkv
                .weight
        ),
        "entity head"
    );
    assert!(
        model.img_projector.norm.gamma.grad(&grads).is_some(),
        "BatchNorm scale"
    );
    // The momentum encoder never receives gradients.
    let momentum = model.img_encoder_momentum.as_ref().unwrap();
    assert!(momentum.layers[0].blocks[0]
        .attn
        .qkv
        .weight
        .grad(&grads)
        .is_none());
}

#[test]
fn gumbel_assignment_is_one_hot_and_random_in_training() {
    let device = Default::default();
    let model = config().init::<AB>(&device);
    let images = Tensor::<AB, 4>::random([2, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    let a = model
        .img_encoder
        .forward(images.clone(), true)
        .assignment
        .hard;
    let b = model
        .img_encoder
        .forward(images.clone(), true)
        .assignment
        .hard;
    // Every patch goes to exactly one group.
    let per_patch: Vec<f32> = a.clone().sum_dim(2).into_data().to_vec().unwrap();
    assert!(per_patch.iter().all(|&s| (s - 1.0).abs() < 1e-5));
    let ones: f32 = a.clone().equal_elem(1.0).float().sum().into_scalar();
    assert_eq!(ones as usize, 2 * 196);
    // Noise makes two training passes choose differently; eval is deterministic.
    assert_ne!(a.into_data(), b.into_data());
    let e1 = model
        .img_encoder
        .forward(images.clone(), false)
        .assignment
        .hard
        .into_data();
    let e2 = model
        .img_encoder
        .forward(images, false)
        .assignment
        .hard
        .into_data();
    assert_eq!(e1, e2);
}

#[test]
fn momentum_encoder_follows_by_ema() {
    let device = Default::default();
    let mut model = config().init::<NdArray>(&device);
    let online = model.img_encoder.pos_embed.val();
    let before = model.img_encoder_momentum.as_ref().unwrap().pos_embed.val();
    model.update_momentum_encoder(0.99);
    let after = model.img_encoder_momentum.as_ref().unwrap().pos_embed.val();
    let expected = before * 0.99 + online.clone() * 0.01;
    let err: f32 = (after - expected).abs().max().into_scalar();
    assert!(err < 1e-6, "{err}");

    model.reset_momentum_encoder();
    let copied = model.img_encoder_momentum.as_ref().unwrap().pos_embed.val();
    let err: f32 = (copied - online).abs().max().into_scalar();
    assert_eq!(err, 0.0);
}

#[test]
fn group_naming_adds_its_weighted_loss_and_trains_the_groups() {
    let device = Default::default();
    let model = config().init::<AB>(&device);
    let images = Tensor::<AB, 4>::random([3, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    let mut batch = TrainBatch {
        images,
        caption: tokens(&device, 3).into(),
        question: tokens(&device, 3).into(),
        answer: tokens(&device, 3).into(),
        cross: None,
        naming: None,
    };
    // Eval mode: no Gumbel noise, running statistics, so both forwards see the same groups.
    let options = LossOptions {
        training: false,
        gather: &LocalGather,
    };
    let plain: f32 = model.losses(&batch, &options).unwrap().total.into_scalar();
    batch.naming = Some(GroupNaming {
        prompts: tokens(&device, 2).into(),
        positives: Tensor::from_floats([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], &device),
        count: 4,
        weight: 0.5,
    });
    let losses = model.losses(&batch, &options).unwrap();
    let naming = losses.naming.clone().expect("the naming loss is computed");
    let naming_value: f32 = naming.clone().into_scalar();
    let total: f32 = losses.total.into_scalar();
    assert!(
        naming_value.is_finite() && naming_value > 0.0,
        "naming {naming_value}"
    );
    assert!(
        (total - plain - 0.5 * naming_value).abs() < 1e-4,
        "total {total} = {plain} + 0.5 * {naming_value}"
    );

    let grads = naming.backward();
    let group_tokens = model.img_encoder.layers[0]
        .group_token
        .as_ref()
        .expect("stage 0 has group tokens");
    let g = group_tokens.grad(&grads).expect("gradient exists");
    assert!(
        g.abs().sum().into_scalar() > 0.0,
        "group tokens get a gradient"
    );
    let p = model
        .img_projector
        .hidden
        .weight
        .grad(&grads)
        .expect("gradient exists");
    assert!(
        p.abs().sum().into_scalar() > 0.0,
        "the image projector gets a gradient"
    );
}
