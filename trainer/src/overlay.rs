//! The overlay picture: each label's colour blended over the photo, and a legend of the labels
//! present (with their share of the picture) drawn under it.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage as Canvas};
use ovseg_model::segmentation::RgbImage;

/// PASCAL VOC's colour map (bit-interleaved index), the palette segmentation tools share.
pub use ovseg_model::segmentation::voc_color as palette_color;

/// Colour of user label `k` (0-based, background excluded): VOC colours from index 1 on.
pub fn label_color(k: usize) -> [u8; 3] {
    palette_color(k + 1)
}

/// `labels[p]` indexes `names`; `background` says whether index 0 is the background (left
/// uncoloured). Returns the overlay with the legend strip below.
pub fn render_overlay(
    picture: &RgbImage,
    labels: &[u32],
    names: &[String],
    background: bool,
    opacity: f32,
) -> Canvas {
    let (w, h) = (picture.width, picture.height);
    let mut counts = vec![0usize; names.len()];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let color_of = |l: usize| -> Option<[u8; 3]> {
        if background {
            (l > 0).then(|| label_color(l - 1))
        } else {
            Some(label_color(l))
        }
    };

    let scale = (w / 500).max(1) as u32;
    let row = 12 * scale;
    let present: Vec<usize> = (0..names.len()).filter(|&l| counts[l] > 0).collect();
    let legend_h = row * present.len() as u32 + 4 * scale;
    let mut canvas = Canvas::from_pixel(w as u32, h as u32 + legend_h, Rgb([255, 255, 255]));
    for (i, &l) in labels.iter().enumerate() {
        let px = &picture.pixels[i * 3..i * 3 + 3];
        let out = match color_of(l as usize) {
            Some(c) => [0, 1, 2]
                .map(|k| (px[k] as f32 * (1.0 - opacity) + c[k] as f32 * opacity).round() as u8),
            None => [px[0], px[1], px[2]],
        };
        canvas.put_pixel((i % w) as u32, (i / w) as u32, Rgb(out));
    }
    let total = labels.len().max(1) as f64;
    for (i, &l) in present.iter().enumerate() {
        let y = h as u32 + 2 * scale + i as u32 * row;
        let swatch = color_of(l).unwrap_or([0, 0, 0]);
        fill(&mut canvas, 2 * scale, y, 8 * scale, 8 * scale, swatch);
        let text = format!("{} {:.1}%", names[l], counts[l] as f64 * 100.0 / total);
        draw_text(&mut canvas, 14 * scale, y, scale, &text);
    }
    canvas
}

fn fill(canvas: &mut Canvas, x: u32, y: u32, w: u32, h: u32, color: [u8; 3]) {
    for yy in y..(y + h).min(canvas.height()) {
        for xx in x..(x + w).min(canvas.width()) {
            canvas.put_pixel(xx, yy, Rgb(color));
        }
    }
}

/// Draws text with the 8x8 bitmap font (characters it lacks become '?'), clipped to the canvas.
fn draw_text(canvas: &mut Canvas, x: u32, y: u32, scale: u32, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::LATIN_FONTS.get(ch))
            .unwrap_or_else(|| font8x8::BASIC_FONTS.get('?').expect("'?' glyph"));
        let gx = x + i as u32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) != 0 {
                    fill(
                        canvas,
                        gx + col * scale,
                        y + row as u32 * scale,
                        scale,
                        scale,
                        [0, 0, 0],
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_palette() {
        assert_eq!(palette_color(0), [0, 0, 0]);
        assert_eq!(palette_color(1), [128, 0, 0]);
        assert_eq!(palette_color(15), [192, 128, 128]);
    }

    #[test]
    fn overlay_blends_and_has_a_legend() {
        let picture = RgbImage::new(2, 1, vec![0, 0, 0, 200, 200, 200]).unwrap();
        let names = vec!["background".to_string(), "cat".to_string()];
        let out = render_overlay(&picture, &[0, 1], &names, true, 0.5);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 0).0, [164, 100, 100]);
        assert!(out.height() > 1);
    }
}
