//! Fuzz targets on stable Rust: seeded loops of damaged inputs through every reader of untrusted
//! bytes (share links, configurations, weight packs, model files, PyTorch checkpoints, which
//! kind of model file a file is). Each case must end in `Ok` or an error: a panic fails the test
//! and names the seed that caused it.
//! Inputs start from valid files and are damaged the ways real damage and hostile edits look:
//! flipped bytes, truncation, runs of 0x00/0xFF, numbers replaced by extremes.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use base64::Engine as _;
use burn::backend::Flex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ovseg_model::checksum;
use ovseg_model::pack::{write_pack, Pack, PackPart, Storage};
use ovseg_model::record::{model_from_bytes, model_to_bytes, Precision};
use ovseg_model::share::{LinkPicture, ShareLink};
use ovseg_model::OvsegConfig;

/// Runs `cases` damaged copies of `valid` through `read`; fails naming the first panicking seed.
fn fuzz(name: &str, cases: u64, valid: &[u8], read: impl Fn(Vec<u8>)) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut panics = Vec::new();
    for seed in 0..cases {
        let damaged = damage(valid, &mut ChaCha8Rng::seed_from_u64(seed));
        if catch_unwind(AssertUnwindSafe(|| read(damaged))).is_err() {
            panics.push(seed);
        }
    }
    std::panic::set_hook(previous);
    assert!(
        panics.is_empty(),
        "{name}: {} of {cases} cases panicked, first seed {}",
        panics.len(),
        panics[0]
    );
}

/// One to four damages of one kind each.
fn damage(valid: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..6) {
            0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => bytes[at] = rng.random(),
            2 => bytes.truncate(at),
            3 => {
                let end = (at + rng.random_range(1..16)).min(bytes.len());
                let fill = if rng.random() { 0x00 } else { 0xFF };
                bytes[at..end].fill(fill);
            }
            4 => {
                // A digit run in text (JSON headers) replaced by a huge or negative number.
                let digits = [
                    b"99999999999999999999".as_slice(),
                    b"-1",
                    b"4294967296",
                    b"0",
                ];
                let pick = digits[rng.random_range(0..digits.len())];
                if bytes[at].is_ascii_digit() {
                    let end = (at..bytes.len())
                        .find(|&i| !bytes[i].is_ascii_digit())
                        .unwrap_or(bytes.len());
                    bytes.splice(at..end, pick.iter().copied());
                }
            }
            _ => {
                let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                bytes.splice(at..at, extra);
            }
        }
    }
    bytes
}

fn shared() -> ShareLink {
    let (width, height) = (64, 48);
    ShareLink {
        labels: vec!["cat".into(), "sofa".into(), "window".into()],
        background: true,
        bg_thresh: 0.9,
        template: "simple".into(),
        model: "demo/image.ovsegpack".into(),
        width,
        height,
        mask: (0..width * height).map(|i| ((i / 7) % 4) as u8).collect(),
        picture: LinkPicture::Url("https://example.org/cat.jpg".into()),
    }
}

/// Share links damaged after decompression (the zlib checksum would catch most damage before),
/// re-packed so the payload reader sees them; a link that reads back must hold a sane mask.
#[test]
fn share_link_decoder() {
    let fragment = shared().to_fragment().unwrap();
    let body = fragment.strip_prefix("ovseg1.").unwrap();
    let packed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .unwrap();
    let payload = miniz_oxide::inflate::decompress_to_vec_zlib(&packed).unwrap();
    fuzz("share payload", 4000, &payload, |damaged| {
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(&damaged, 1);
        let link = format!(
            "#ovseg1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(packed)
        );
        if let Ok(s) = ShareLink::from_link(&link) {
            assert_eq!(s.mask.len(), s.width * s.height);
            assert!(s.mask.iter().all(|&m| (m as usize) < s.classes()));
        }
    });
    fuzz("share text", 4000, fragment.as_bytes(), |damaged| {
        let _ = ShareLink::from_link(&String::from_utf8_lossy(&damaged));
    });
}

/// Configurations: every damaged model.json either fails validation or describes a model whose
/// size stays within what validation promises.
#[test]
fn configuration_validation() {
    for preset in OvsegConfig::PRESETS {
        let valid = serde_json::to_vec(&OvsegConfig::preset(preset).unwrap()).unwrap();
        fuzz(preset, 2000, &valid, |damaged| {
            if let Ok(config) = serde_json::from_slice::<OvsegConfig>(&damaged) {
                let _ = config.validate();
            }
        });
    }
}

fn tiny() -> (OvsegConfig, ovseg_model::OvSegmentor<Flex>) {
    let config = OvsegConfig::tiny();
    let model = config.init::<Flex>(&Default::default());
    (config, model)
}

/// Fuzzes a sealed file (`valid` ends with its checksum trailer) twice: as damaged, where the
/// checksum catches nearly everything, and damaged then sealed again, as a hostile writer would,
/// so that every damage reaches the parser behind the checksum.
fn fuzz_sealed(name: &str, cases: u64, valid: &[u8], read: impl Fn(Vec<u8>)) {
    fuzz(name, cases, valid, &read);
    let unsealed = &valid[..valid.len() - checksum::TRAILER_LEN];
    fuzz(
        &format!("{name}, sealed again"),
        cases,
        unsealed,
        |mut damaged| {
            checksum::seal(&mut damaged);
            read(damaged)
        },
    );
}

#[test]
fn weight_pack_reader() {
    let (config, model) = tiny();
    for (part, storage) in [
        (PackPart::Image, Storage::Int8),
        (PackPart::Text, Storage::F16),
    ] {
        let valid = write_pack(&model, &config, part, storage, None).unwrap();
        fuzz_sealed("weight pack", 600, &valid, |damaged| {
            if let Ok(pack) = Pack::from_bytes(damaged, "fuzz.ovsegpack") {
                if let Ok(model) = pack.init_model::<Flex>(&Default::default()) {
                    let _ = pack.load_into(model, pack.config());
                }
            }
        });
    }
}

#[test]
fn model_file_reader() {
    let (config, model) = tiny();
    let valid = model_to_bytes(model, &config, None, Precision::Full).unwrap();
    fuzz_sealed("model file", 300, &valid, |damaged| {
        let _ = model_from_bytes::<Flex>(damaged, "fuzz.ovseg", &Default::default());
    });
}

/// `ModelFile::detect` (the CLI's, the engine's and the page's `model_file_kind`) on the first
/// bytes of every kind of file, damaged: an answer or a one-line error, never a panic.
#[test]
fn model_file_kind() {
    use ovseg_model::formats::{ModelFile, DETECT_BYTES};
    let (config, model) = tiny();
    let pth = std::fs::read(common::tiny_dir().join("checkpoint.pth")).unwrap();
    let files = [
        model_to_bytes(model.clone(), &config, None, Precision::Full).unwrap(),
        write_pack(&model, &config, PackPart::Image, Storage::Int8, None).unwrap(),
        write_pack(&model, &config, PackPart::Text, Storage::F16, None).unwrap(),
        pth,
    ];
    for valid in &files {
        let prefix = &valid[..valid.len().min(DETECT_BYTES)];
        fuzz("model file kind", 2000, prefix, |damaged| {
            if let Err(e) = ModelFile::detect(&damaged) {
                assert!(!e.to_string().contains('\n'), "{e}");
            }
        });
    }
}

#[test]
fn pytorch_checkpoint_reader() {
    let valid = std::fs::read(common::tiny_dir().join("checkpoint.pth")).unwrap();
    let config: OvsegConfig = serde_json::from_str(
        &std::fs::read_to_string(common::tiny_dir().join("model.json")).unwrap(),
    )
    .unwrap();
    let dir = common::scratch("fuzz-pth");
    fuzz("checkpoint.pth", 200, &valid, |damaged| {
        let path = dir.join("damaged.pth");
        std::fs::write(&path, damaged).unwrap();
        let _ = ovseg_model::import::load_checkpoint::<Flex>(&path, &config, &Default::default());
    });
}
