//! PASCAL VOC's colour map, the palette segmentation tools share (mmseg, the VOC annotations):
//! the command line's overlays and predictions, the synthetic world's label PNGs, and the page
//! (through the wasm function `voc_palette`) colour labels with it.

/// The colour of palette index `index`: its bits interleaved into red, green and blue from the
/// most significant bit down (0 black, 1 dark red, 2 dark green, ...).
pub fn voc_color(index: usize) -> [u8; 3] {
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    let mut c = index;
    for shift in (0..8).rev() {
        r |= ((c & 1) as u8) << shift;
        g |= (((c >> 1) & 1) as u8) << shift;
        b |= (((c >> 2) & 1) as u8) << shift;
        c >>= 3;
    }
    [r, g, b]
}

/// The 256 colours of [`voc_color`], RGB after RGB (768 bytes), as a PNG palette holds them.
pub fn voc_palette() -> Vec<u8> {
    (0..256).flat_map(voc_color).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_voc_colours() {
        // VOC's annotation colours: background, aeroplane, bicycle, bird, ..., person, and the
        // border colour 255.
        assert_eq!(voc_color(0), [0, 0, 0]);
        assert_eq!(voc_color(1), [128, 0, 0]);
        assert_eq!(voc_color(2), [0, 128, 0]);
        assert_eq!(voc_color(3), [128, 128, 0]);
        assert_eq!(voc_color(15), [192, 128, 128]);
        assert_eq!(voc_color(20), [0, 64, 128]);
        assert_eq!(voc_color(255), [224, 224, 192]);
        let palette = voc_palette();
        assert_eq!(palette.len(), 768);
        assert_eq!(&palette[45..48], &[192, 128, 128]);
    }
}
