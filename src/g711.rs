//! ITU-T G.711 companding: 16-bit linear PCM to and from µ-law (PCMU, RTP
//! payload type 0) and A-law (PCMA, payload type 8).
//!
//! The results match the ITU-T G.191 reference implementation bit for bit.
//! Two details of that reference matter and differ from some widespread code:
//!
//! - Only the top 14 (µ-law) or 13 (A-law) bits of the input count, so the
//!   low bits are dropped by an arithmetic shift before quantising.
//! - A negative sample is folded to its one's complement (`!x`, i.e. `-x - 1`)
//!   rather than negated, which makes the quantiser exactly symmetric about
//!   -0.5: `x` and `!x` always land in the same interval with opposite signs.
//!
//! Everything is plain arithmetic in `const fn`s: no tables to build, no
//! allocation, usable in constant contexts.

/// µ-law bias (in 14-bit units) that moves every segment start onto a power
/// of two, so the segment number is the position of the leading one.
const ULAW_BIAS: i32 = 33;

/// Largest biased µ-law magnitude; louder input clips to the top code.
const ULAW_CLIP: i32 = 0x1FFF;

/// A-law inverts every even bit of the code word on the line (G.711 §3).
const ALAW_EVEN_BITS: u8 = 0x55;

/// Code word sign bit; set for positive samples in both laws.
const SIGN_BIT: u8 = 0x80;

/// Encodes one 16-bit linear sample as a G.711 µ-law code word.
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    let (magnitude, sign) = fold_sign(sample);
    let biased = min_i32((magnitude >> 2) as i32 + ULAW_BIAS, ULAW_CLIP) as u32;
    // `biased` lies in [2^(segment+5), 2^(segment+6)) for segments 0..=7.
    let segment = 26 - biased.leading_zeros();
    let step = (biased >> (segment + 1)) & 0x0F;
    // µ-law transmits the segment and step bits inverted.
    (!((segment << 4) | step) as u8 & 0x7F) | sign
}

/// Decodes one G.711 µ-law code word to a 16-bit linear sample.
pub const fn ulaw_to_linear(code: u8) -> i16 {
    let bits = !code;
    let segment = ((bits >> 4) & 0x07) as i32;
    let step = (bits & 0x0F) as i32;
    // The midpoint of the step's interval in 14-bit units, scaled to 16 bits.
    let magnitude = (((2 * step + ULAW_BIAS) << segment) - ULAW_BIAS) << 2;
    apply_sign(code, magnitude)
}

/// Encodes one 16-bit linear sample as a G.711 A-law code word.
pub const fn linear_to_alaw(sample: i16) -> u8 {
    let (magnitude, sign) = fold_sign(sample);
    // 12 magnitude bits; segments 0 and 1 share the finest step, so below 32
    // the magnitude is already the code.
    let magnitude = (magnitude >> 4) as u32;
    let code = if magnitude < 32 {
        magnitude
    } else {
        // `magnitude` lies in [2^(segment+3), 2^(segment+4)) for segments 2..=7.
        let segment = 28 - magnitude.leading_zeros();
        (segment << 4) | ((magnitude >> (segment - 1)) & 0x0F)
    };
    (code as u8 | sign) ^ ALAW_EVEN_BITS
}

/// Decodes one G.711 A-law code word to a 16-bit linear sample.
pub const fn alaw_to_linear(code: u8) -> i16 {
    let bits = (code ^ ALAW_EVEN_BITS) & 0x7F;
    let segment = (bits >> 4) as i32;
    let step = (bits & 0x0F) as i32;
    // The midpoint of the step's interval, in 16-bit units.
    let magnitude = if segment == 0 {
        (2 * step + 1) << 3
    } else {
        (2 * step + 33) << (segment + 2)
    };
    apply_sign(code, magnitude)
}

/// Splits a sample into the magnitude G.191 quantises and the code sign bit.
const fn fold_sign(sample: i16) -> (i16, u8) {
    if sample < 0 {
        (!sample, 0)
    } else {
        (sample, SIGN_BIT)
    }
}

/// Gives a decoded magnitude the sign carried by the code word.
const fn apply_sign(code: u8, magnitude: i32) -> i16 {
    if code & SIGN_BIT != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn min_i32(a: i32, b: i32) -> i32 {
    if a < b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a law lays its 128 magnitude levels onto code words: `level` 0 is
    /// the quietest, `positive` selects the sign.
    fn ulaw_code(level: usize, positive: bool) -> u8 {
        // Levels are sent inverted, with the sign bit set for positive.
        (0x7F - level as u8) | if positive { 0x80 } else { 0 }
    }

    fn alaw_code(level: usize, positive: bool) -> u8 {
        (level as u8 | if positive { 0x80 } else { 0 }) ^ 0x55
    }

    /// Lower decision threshold of every level, in 16-bit units, derived from
    /// the reconstruction values alone: G.711 has 8 segments of 16 uniform
    /// steps, and each reconstruction value sits mid-interval, so a level's
    /// interval starts half its own step below it.
    fn thresholds(levels: &[i32; 128]) -> [i32; 128] {
        let mut lower = [0i32; 128];
        for level in 1..128 {
            let step = if level % 16 == 15 {
                levels[level] - levels[level - 1]
            } else {
                levels[level + 1] - levels[level]
            };
            assert_eq!(step % 2, 0, "odd step at level {level}");
            lower[level] = levels[level] - step / 2;
        }
        // Level 0 takes everything below level 1's threshold.
        lower[0] = i32::MIN;
        lower
    }

    fn reconstruction(decode: fn(u8) -> i16, code: fn(usize, bool) -> u8) -> [i32; 128] {
        let mut levels = [0i32; 128];
        for (level, value) in levels.iter_mut().enumerate() {
            *value = i32::from(decode(code(level, true)));
            assert_eq!(
                i32::from(decode(code(level, false))),
                -*value,
                "level {level} not symmetric"
            );
        }
        assert!(
            levels.windows(2).all(|w| w[0] < w[1]),
            "levels not increasing"
        );
        levels
    }

    /// Quantises by searching the threshold table: the level is the last one
    /// whose interval starts at or below the folded magnitude.
    fn quantise_by_search(sample: i16, lower: &[i32; 128], code: fn(usize, bool) -> u8) -> u8 {
        let positive = sample >= 0;
        let magnitude = if positive {
            i32::from(sample)
        } else {
            -i32::from(sample) - 1
        };
        let level = lower.partition_point(|&t| t <= magnitude) - 1;
        code(level, positive)
    }

    #[test]
    fn ulaw_encoder_matches_threshold_search_for_every_input() {
        let lower = thresholds(&reconstruction(ulaw_to_linear, ulaw_code));
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(
                linear_to_ulaw(sample),
                quantise_by_search(sample, &lower, ulaw_code),
                "sample {sample}"
            );
        }
    }

    #[test]
    fn alaw_encoder_matches_threshold_search_for_every_input() {
        let lower = thresholds(&reconstruction(alaw_to_linear, alaw_code));
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(
                linear_to_alaw(sample),
                quantise_by_search(sample, &lower, alaw_code),
                "sample {sample}"
            );
        }
    }

    #[test]
    fn ulaw_thresholds_are_the_g711_decision_values() {
        // G.711 Table 2a, in 14-bit units: segment edges at 1, 31, 95, 223,
        // 479, 991, 2015, 4063, and the overload point 8159.
        let lower = thresholds(&reconstruction(ulaw_to_linear, ulaw_code));
        let edges: Vec<i32> = (1..8).map(|s| lower[s * 16] / 4).collect();
        assert_eq!(edges, [31, 95, 223, 479, 991, 2015, 4063]);
        assert_eq!(lower[1] / 4, 1);
        assert_eq!(ulaw_to_linear(0x80) / 4 + 128, 8159);
    }

    #[test]
    fn alaw_thresholds_are_the_g711_decision_values() {
        // G.711 Table 1a, in 13-bit units (16-bit / 8): segment edges at 32,
        // 64, 128, 256, 512, 1024, 2048, overload point 4096.
        let lower = thresholds(&reconstruction(alaw_to_linear, alaw_code));
        let edges: Vec<i32> = (1..8).map(|s| lower[s * 16] / 8).collect();
        assert_eq!(edges, [32, 64, 128, 256, 512, 1024, 2048]);
        assert_eq!(alaw_to_linear(0xAA) / 8 + 64, 4096);
    }

    #[test]
    fn ulaw_decodes_known_values() {
        let known: [(u8, i16); 16] = [
            (0x00, -32124),
            (0x01, -31100),
            (0x0F, -16764),
            (0x10, -15996),
            (0x1F, -8316),
            (0x20, -7932),
            (0x40, -1884),
            (0x5F, -396),
            (0x70, -120),
            (0x7E, -8),
            (0x7F, 0),
            (0x80, 32124),
            (0xC0, 1884),
            (0xEF, 132),
            (0xFE, 8),
            (0xFF, 0),
        ];
        for (code, value) in known {
            assert_eq!(ulaw_to_linear(code), value, "code {code:#04x}");
        }
    }

    #[test]
    fn alaw_decodes_known_values() {
        let known: [(u8, i16); 16] = [
            (0x00, -5504),
            (0x01, -5248),
            (0x0A, -8064),
            (0x10, -2752),
            (0x2A, -32256),
            (0x30, -11008),
            (0x40, -344),
            (0x55, -8),
            (0x54, -24),
            (0x5A, -248),
            (0x80, 5504),
            (0xAA, 32256),
            (0xD0, 88),
            (0xD4, 24),
            (0xD5, 8),
            (0xFF, 848),
        ];
        for (code, value) in known {
            assert_eq!(alaw_to_linear(code), value, "code {code:#04x}");
        }
    }

    #[test]
    fn g191_fold_puts_minus_one_with_zero() {
        // One's complement folding: -1 is the negative twin of 0, not of 1.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(-4), 0x7F);
        assert_eq!(linear_to_ulaw(-5), 0x7E);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(-16), 0x55);
        assert_eq!(linear_to_alaw(-17), 0x54);
    }

    #[test]
    fn extremes_clip_to_the_top_code() {
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn decode_then_encode_is_identity() {
        for code in 0..=255u8 {
            // µ-law has two zeros (0x7F, 0xFF); both decode to 0, which
            // encodes as the positive one.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(linear_to_ulaw(ulaw_to_linear(code)), expected);
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code);
        }
    }

    #[test]
    fn usable_in_const_context() {
        const SILENCE: u8 = linear_to_ulaw(0);
        const TOP: i16 = alaw_to_linear(0xAA);
        assert_eq!(SILENCE, 0xFF);
        assert_eq!(TOP, 32256);
    }
}
