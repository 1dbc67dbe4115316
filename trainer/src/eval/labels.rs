//! Ground-truth label PNGs as stored class values: indexed PNGs give their palette indices
//! (as PIL reads PASCAL annotations), grey PNGs their values.

use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};
use png::{BitDepth, ColorType};

pub fn read_label_png(path: &Path) -> Result<(Vec<u32>, usize, usize)> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open label {}", path.display()))?;
    let decoder = png::Decoder::new(BufReader::new(file));
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("corrupt label PNG {}", path.display()))?;
    let size = reader
        .output_buffer_size()
        .with_context(|| format!("label {} is too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("corrupt label PNG {}", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    if !matches!(info.color_type, ColorType::Indexed | ColorType::Grayscale) {
        bail!(
            "label {} is {:?}; expected an indexed or grey PNG of class values",
            path.display(),
            info.color_type
        );
    }
    let values = match info.bit_depth {
        BitDepth::Eight => buf[..w * h].iter().map(|&v| v as u32).collect(),
        BitDepth::Sixteen => buf[..w * h * 2]
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as u32)
            .collect(),
        depth => {
            let bits = depth as usize;
            let row_bytes = (w * bits).div_ceil(8);
            let mut values = Vec::with_capacity(w * h);
            for y in 0..h {
                let row = &buf[y * row_bytes..(y + 1) * row_bytes];
                for x in 0..w {
                    let bit = x * bits;
                    let byte = row[bit / 8];
                    let shift = 8 - bits - bit % 8;
                    values.push(((byte >> shift) & ((1u8 << bits) - 1)) as u32);
                }
            }
            values
        }
    };
    Ok((values, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_png_gives_indices() {
        let path = std::env::temp_dir().join(format!("ovseg-indexed-{}.png", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 3, 2);
        enc.set_color(ColorType::Indexed);
        enc.set_depth(BitDepth::Eight);
        let mut palette = vec![0u8; 256 * 3];
        palette[3..6].copy_from_slice(&[128, 0, 0]);
        enc.set_palette(palette);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0, 1, 255, 2, 1, 0]).unwrap();
        drop(w);
        let (v, width, height) = read_label_png(&path).unwrap();
        assert_eq!((width, height), (3, 2));
        assert_eq!(v, vec![0, 1, 255, 2, 1, 0]);
    }
}
