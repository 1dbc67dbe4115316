//! The browser's segmentation path, natively: the fixture model file and picture give the
//! reference label map, and the class embeddings are reused across pictures.

use std::path::PathBuf;

use burn::backend::NdArray;
use ovseg_model::record::{model_to_bytes, Precision};
use ovseg_model::segmentation::MAX_BYTE_LABELS;
use ovseg_web::engine::{Engine, Request};

/// The page's request for these words: background, threshold 0.95, one template.
fn request(labels: &str) -> Request {
    Request::parse(labels, true, 0.95, "simple", MAX_BYTE_LABELS).unwrap()
}

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("OVSEG_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    assert!(
        dir.join("reference-tiny").is_dir(),
        "fixtures not found at {}",
        dir.display()
    );
    dir.join("reference-tiny")
}

/// The reference fixture's model, inference parts only.
fn fixture_model(
    config: &ovseg_model::OvsegConfig,
    device: &burn::tensor::Device<NdArray>,
) -> ovseg_model::OvSegmentor<NdArray> {
    ovseg_model::import::load_checkpoint::<NdArray>(
        &fixtures().join("checkpoint.pth"),
        config,
        device,
    )
    .unwrap()
    .0
    .into_inference()
}

const VOC: &str = "aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person,plant,sheep,sofa,train,monitor";

#[test]
fn engine_reproduces_the_reference_label_map_and_caches_words() {
    let device = Default::default();
    let config = ovseg_model::OvsegConfig::tiny();
    let bytes = model_to_bytes(
        fixture_model(&config, &device),
        &config,
        None,
        Precision::Full,
    )
    .unwrap();
    let mut engine = Engine::<NdArray>::new(bytes.clone(), None, &device).unwrap();

    let picture = image_rgba(&fixtures().join("seg_image.png"));
    let request = request(VOC);
    let labels = engine
        .segment_rgba(&picture.0, picture.1, picture.2, &request)
        .unwrap();

    let reference = std::fs::read(fixtures().join("outputs.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&reference).unwrap();
    let expected: Vec<u8> = st
        .tensor("seg_pred_slide")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u8)
        .collect();
    let differing = labels.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert!(
        differing * 2000 <= expected.len(),
        "{differing} pixels differ"
    );

    let small = image_rgba(&fixtures().join("image0_224.png"));
    engine
        .segment_rgba(&small.0, small.1, small.2, &request)
        .unwrap();
    assert_eq!(
        engine.cached_label_sets(),
        1,
        "same words, no new text encoding"
    );
    assert_eq!(engine.text_encoder_runs(), 1);

    // Precomputed embeddings (the export's presets) are used without running the text encoder:
    // the reference's own class embeddings give the reference label map.
    let outputs = safetensors::SafeTensors::deserialize(&reference).unwrap();
    let class_embedding: Vec<f32> = outputs
        .tensor("class_embedding")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut fresh = Engine::<NdArray>::new(bytes, None, &device).unwrap();
    fresh
        .add_class_embeddings(VOC, "simple", class_embedding)
        .unwrap();
    let again = fresh
        .segment_rgba(&picture.0, picture.1, picture.2, &request)
        .unwrap();
    assert_eq!(fresh.text_encoder_runs(), 0, "precomputed embeddings used");
    let differing = again.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert!(
        differing * 2000 <= expected.len(),
        "{differing} pixels differ"
    );
    assert!(fresh
        .add_class_embeddings("cat,dog", "simple", vec![0.0; 3])
        .is_err());

    // The raw groups: the fixture model has 4 output groups; every pixel gets one, several used.
    let (groups, count) = fresh
        .start_groups(&picture.0, picture.1, picture.2)
        .unwrap();
    assert_eq!(count, 4);
    let map = ovseg_web::engine::label_bytes(groups.into_data()).unwrap();
    assert_eq!(map.len(), 448 * 448);
    let used = (0..4u8).filter(|g| map.contains(g)).count();
    assert!(
        map.iter().all(|&g| g < 4) && used >= 2,
        "{used} groups used"
    );

    // A bad word list is refused when the request is made, before it reaches the engine.
    assert!(Request::parse("cat,,dog", true, 0.95, "simple", MAX_BYTE_LABELS).is_err());
    assert!(engine
        .segment_rgba(&small.0[..100], small.1, small.2, &request)
        .is_err());
}

/// The export's two packs: the image part alone segments a preset (its embeddings given), says
/// that other words need the text part, and with the text part added gives the label map of the
/// whole model file stored at the same precision.
#[test]
fn image_pack_first_text_pack_on_demand() {
    use ovseg_model::pack::{write_pack, PackPart, Storage};
    let device = Default::default();
    let config = ovseg_model::OvsegConfig::tiny();
    let model = fixture_model(&config, &device);
    let whole = model_to_bytes(model.clone(), &config, None, Precision::Half).unwrap();
    let mut reference = Engine::<NdArray>::new(whole, None, &device).unwrap();
    let picture = image_rgba(&fixtures().join("seg_image.png"));
    let voc = request(VOC);
    let words_text = "cat, sky, grass";
    let words = request(words_text);
    let expected_voc = reference
        .segment_rgba(&picture.0, picture.1, picture.2, &voc)
        .unwrap();
    let expected_words = reference
        .segment_rgba(&picture.0, picture.1, picture.2, &words)
        .unwrap();

    let image = write_pack(&model, &config, PackPart::Image, Storage::F16, None).unwrap();
    let text = write_pack(&model, &config, PackPart::Text, Storage::F16, None).unwrap();
    let mut engine = Engine::<NdArray>::new(image.clone(), None, &device).unwrap();
    assert!(!engine.has_text());
    // The preset's embeddings, as `ovseg export-web` precomputes them with the text encoder.
    let voc_embeddings = ovseg_model::segmentation::ClassEmbedder::new(
        &ovseg_model::text::TextTokenizer::bert_base_uncased(),
        ovseg_model::segmentation::TemplateSet::parse("simple").unwrap(),
    )
    .embed(
        &model,
        &ovseg_model::segmentation::parse_labels(VOC, MAX_BYTE_LABELS).unwrap(),
        &device,
    )
    .unwrap()
    .into_data()
    .to_vec::<f32>()
    .unwrap();
    engine
        .add_class_embeddings(VOC, "simple", voc_embeddings)
        .unwrap();
    assert!(!engine.needs_text(VOC, "simple").unwrap());
    assert!(engine.needs_text(words_text, "simple").unwrap());
    let got = engine
        .segment_rgba(&picture.0, picture.1, picture.2, &voc)
        .unwrap();
    let differing = got
        .iter()
        .zip(&expected_voc)
        .filter(|(a, b)| a != b)
        .count();
    assert!(differing * 2000 <= got.len(), "{differing} pixels differ");
    let e = engine
        .segment_rgba(&picture.0, picture.1, picture.2, &words)
        .unwrap_err()
        .to_string();
    assert!(e.contains("text encoder is not loaded"), "{e}");

    assert!(
        engine.add_text_weights(image, None).is_err(),
        "an image pack is not text"
    );
    engine.add_text_weights(text, None).unwrap();
    assert!(engine.has_text() && !engine.needs_text(words_text, "simple").unwrap());
    let got = engine
        .segment_rgba(&picture.0, picture.1, picture.2, &words)
        .unwrap();
    assert_eq!(got, expected_words);
    assert_eq!(engine.text_encoder_runs(), 1);
}

/// The fixture PNGs are 8-bit RGB; the page hands the engine RGBA.
fn image_rgba(path: &std::path::Path) -> (Vec<u8>, usize, usize) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight)
    );
    let rgba = buf[..info.width as usize * info.height as usize * 3]
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    (rgba, info.width as usize, info.height as usize)
}

/// A RoBERTa model (`reference-roberta`) carries its byte-level BPE tokenizer: the model file
/// alone gives the reference label map, and an image pack gets the tokenizer with its text
/// pack. A tokenizer of another model is refused.
#[test]
fn roberta_model_and_packs_bring_their_tokenizer() {
    use ovseg_model::pack::{write_pack, PackPart, Storage};
    let device = Default::default();
    let dir = fixtures().with_file_name("reference-roberta");
    let config = ovseg_model::OvsegConfig::from_json(
        &std::fs::read_to_string(dir.join("model.json")).unwrap(),
    )
    .unwrap();
    let tokenizer = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    let model = ovseg_model::import::load_checkpoint::<NdArray>(
        &dir.join("checkpoint.pth"),
        &config,
        &device,
    )
    .unwrap()
    .0
    .into_inference();
    let whole = model_to_bytes(model.clone(), &config, Some(&tokenizer), Precision::Full).unwrap();
    let picture = image_rgba(&dir.join("seg_image.png"));
    let voc = request(VOC);
    let mut engine = Engine::<NdArray>::new(whole.clone(), None, &device).unwrap();
    let labels = engine
        .segment_rgba(&picture.0, picture.1, picture.2, &voc)
        .unwrap();
    let reference = std::fs::read(dir.join("outputs.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&reference).unwrap();
    let expected: Vec<u8> = st
        .tensor("seg_pred_slide")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u8)
        .collect();
    let differing = labels.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert!(
        differing * 2000 <= expected.len(),
        "{differing} pixels differ"
    );

    // The packs: the text part brings the tokenizer, and the label map is the whole file's.
    let image = write_pack(
        &model,
        &config,
        PackPart::Image,
        Storage::F32,
        Some(&tokenizer),
    )
    .unwrap();
    let text = write_pack(
        &model,
        &config,
        PackPart::Text,
        Storage::F32,
        Some(&tokenizer),
    )
    .unwrap();
    let mut packed = Engine::<NdArray>::new(image.clone(), None, &device).unwrap();
    packed.add_text_weights(text.clone(), None).unwrap();
    let from_packs = packed
        .segment_rgba(&picture.0, picture.1, picture.2, &voc)
        .unwrap();
    assert_eq!(from_packs, labels);

    // BERT's tokenizer for this model: refused, by the model file and by the text pack.
    let bert = std::fs::read(fixtures().with_file_name("minilm").join("tokenizer.json")).unwrap();
    let e = Engine::<NdArray>::new(whole, Some(&bert), &device)
        .err()
        .unwrap();
    assert!(e.to_string().contains("pad_token_id is 1"), "{e}");
    let mut packed = Engine::<NdArray>::new(image, None, &device).unwrap();
    let e = packed.add_text_weights(text, Some(&bert)).unwrap_err();
    assert!(e.to_string().contains("pad_token_id is 1"), "{e}");
}
