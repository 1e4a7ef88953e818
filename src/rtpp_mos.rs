//! Listening quality of one direction as a number an operator knows: the
//! ITU-T G.107 E-model's rating R, reduced the way VoIP monitors use it,
//! and the MOS that G.107 Annex B maps it to.
//!
//! ```text
//! R   = R0 - Is - Id - Ie,eff + A       R0 - Is = 93.2 (G.107 defaults), A = 0
//! Id  = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)      d: one-way delay, ms
//! Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)  Ppl: loss, %; BurstR = 1
//! MOS = 1                                    R <= 0
//!     = 1 + 0.035 R + R (R - 60) (100 - R) 7e-6
//!     = 4.5                                  R >= 100
//! ```
//!
//! The delay `d` is what the relay can know of the mouth-to-ear delay:
//! half the round trip it measured from RTCP (see [`Inputs`]), a jitter
//! buffer of twice the interarrival jitter, and the codec's own delay
//! (packetization and look-ahead). Echo, noise and the terminals' own
//! delays are not seen from the middle of the path and keep G.107's
//! defaults (they are in the 93.2).
//!
//! Codec figures (`Ie`, `Bpl`) are ITU-T G.113 Appendix I's, see
//! [`codec`]. Everything here is a pure function of numbers: it runs once
//! per ended direction, never per packet.

/// R0 - Is with G.107's default parameters.
pub const R_DEFAULT: f64 = 93.2;

/// What the E-model needs to know of a codec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Codec {
    /// Short name for logs and reports.
    pub name: &'static str,
    /// Equipment impairment factor without loss (G.113 Table I.1).
    pub ie: f64,
    /// Packet-loss robustness factor (G.113 Table I.3).
    pub bpl: f64,
    /// Packetization and look-ahead, ms: the delay the codec adds.
    pub delay_ms: f64,
    /// False when the payload type is not one of ours and the figures
    /// are the defaults.
    pub known: bool,
}

/// G.711 with packet-loss concealment (G.711 Appendix I): Ie 0, Bpl 25.1.
/// Phones and gateways conceal lost G.711 frames today; scoring without
/// it (Bpl 4.3) would call a 1 % loss "poor" that listeners barely hear.
const G711: Codec = Codec {
    name: "G.711",
    ie: 0.0,
    bpl: 25.1,
    delay_ms: 20.0,
    known: true,
};

/// The codec sending RTP payload type `pt` (RFC 3551's static types), or
/// the documented defaults.
///
/// | pt | codec | Ie | Bpl | delay ms |
/// |---|---|---|---|---|
/// | 0, 8 | G.711 µ-law, A-law, with PLC | 0 | 25.1 | 20 |
/// | 9 | G.722, scored as G.711 with PLC | 0 | 25.1 | 20 |
/// | 18 | G.729(A) | 11 | 19.0 | 25 (20 + 5 look-ahead) |
/// | 4 | G.723.1 6.3 kbit/s | 15 | 16.1 | 37.5 (30 + 7.5) |
/// | 3 | GSM-FR | 20 | 10.0 | 20 |
/// | 15 | G.728 | 7 | 10.0 | 20 |
/// | others | unknown: scored as G.711 with PLC | 0 | 25.1 | 20 |
///
/// G.722 is wideband; the narrowband E-model has no place for its gain,
/// so it is scored like G.711 (never worse than it sounds). G.113 gives
/// GSM-FR's and G.728's Ie but no Bpl: they take 10.0, the figure G.113
/// gives GSM-EFR. A payload type we cannot name (dynamic types: Opus,
/// AMR, iLBC...) gets no coding impairment and G.711's concealment, so its
/// score speaks of the network alone.
pub fn codec(pt: Option<u8>) -> Codec {
    let Some(pt) = pt else {
        return Codec {
            known: false,
            name: "unknown",
            ..G711
        };
    };
    match pt {
        0 | 8 => G711,
        9 => Codec {
            name: "G.722",
            ..G711
        },
        18 => Codec {
            name: "G.729",
            ie: 11.0,
            bpl: 19.0,
            delay_ms: 25.0,
            known: true,
        },
        4 => Codec {
            name: "G.723.1",
            ie: 15.0,
            bpl: 16.1,
            delay_ms: 37.5,
            known: true,
        },
        3 => Codec {
            name: "GSM",
            ie: 20.0,
            bpl: 10.0,
            delay_ms: 20.0,
            known: true,
        },
        15 => Codec {
            name: "G.728",
            ie: 7.0,
            bpl: 10.0,
            delay_ms: 20.0,
            known: true,
        },
        _ => codec(None),
    }
}

/// What the relay measured of one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    /// Packets lost, percent of those expected (0-100).
    pub loss_pct: f64,
    /// One-way network delay, ms: half the round trip the relay measured,
    /// 0 when it measured none.
    pub network_delay_ms: f64,
    /// Interarrival jitter, ms.
    pub jitter_ms: f64,
    pub codec: Codec,
}

impl Inputs {
    /// The one-way delay `d` of the E-model: the network's, a jitter
    /// buffer of twice the jitter, and the codec's.
    pub fn delay_ms(&self) -> f64 {
        self.network_delay_ms.max(0.0) + 2.0 * self.jitter_ms.max(0.0) + self.codec.delay_ms
    }
}

/// The delay impairment Id of a one-way delay of `d` ms (G.107,
/// simplified as in G.107's own VoIP examples).
pub fn delay_impairment(d: f64) -> f64 {
    let d = d.max(0.0);
    let over = if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    0.024 * d + over
}

/// The effective equipment impairment Ie,eff of `codec` with `loss_pct`
/// percent of its packets lost at random (BurstR = 1).
pub fn effective_ie(codec: &Codec, loss_pct: f64) -> f64 {
    let ppl = loss_pct.clamp(0.0, 100.0);
    let burst_r = 1.0;
    codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst_r + codec.bpl)
}

/// The rating R of a direction.
pub fn r_factor(i: &Inputs) -> f64 {
    R_DEFAULT - delay_impairment(i.delay_ms()) - effective_ie(&i.codec, i.loss_pct)
}

/// The MOS (1 to 4.5) of a rating `r` (G.107 Annex B). The cubic dips
/// just below 1 for R under about 6.5 (0.99 at R = 3); that is taken as
/// 1, the floor of the scale.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
    }
}

/// G.107's user satisfaction categories, which the `G` counters count
/// ended directions by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    /// R >= 80 (MOS >= 4.03): satisfied or very satisfied.
    Good,
    /// 70 <= R < 80 (MOS 3.60-4.03): some users dissatisfied.
    Fair,
    /// 60 <= R < 70 (MOS 3.10-3.60): many users dissatisfied.
    Poor,
    /// R < 60 (MOS < 3.10): nearly all users dissatisfied.
    Bad,
}

impl Band {
    /// The band of rating `r`.
    pub fn of(r: f64) -> Band {
        if r >= 80.0 {
            Band::Good
        } else if r >= 70.0 {
            Band::Fair
        } else if r >= 60.0 {
            Band::Poor
        } else {
            Band::Bad
        }
    }

    /// The band's name (`good`, `fair`, `poor`, `bad`).
    pub fn name(self) -> &'static str {
        match self {
            Band::Good => "good",
            Band::Fair => "fair",
            Band::Poor => "poor",
            Band::Bad => "bad",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(got: f64, want: f64, tolerance: f64) {
        assert!((got - want).abs() <= tolerance, "{got} is not {want}");
    }

    fn quiet(pt: u8) -> Inputs {
        Inputs {
            loss_pct: 0.0,
            network_delay_ms: 0.0,
            jitter_ms: 0.0,
            codec: codec(Some(pt)),
        }
    }

    #[test]
    fn mos_curve_at_published_points() {
        // G.107 Annex B / G.109: the default rating and the category
        // limits.
        near(mos_from_r(93.2), 4.41, 0.005);
        near(mos_from_r(50.0), 2.58, 0.005);
        near(mos_from_r(60.0), 3.10, 0.005);
        near(mos_from_r(70.0), 3.60, 0.005);
        near(mos_from_r(80.0), 4.02, 0.005);
        near(mos_from_r(90.0), 4.34, 0.005);
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(100.0), 4.5);
        assert_eq!(mos_from_r(120.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
    }

    /// Found by the `rtp` and `rtcp` fuzz targets: a direction that lost
    /// nearly everything (R about 3) scored a MOS of 0.99.
    #[test]
    fn mos_never_leaves_the_scale() {
        for tenths in 0..=1000 {
            let m = mos_from_r(f64::from(tenths) / 10.0);
            assert!((1.0..=4.5).contains(&m), "R {tenths}/10: {m}");
        }
        assert_eq!(mos_from_r(3.0), 1.0);
    }

    #[test]
    fn delay_impairment_bends_at_177_ms() {
        near(delay_impairment(0.0), 0.0, 1e-9);
        near(delay_impairment(100.0), 2.4, 1e-9);
        near(delay_impairment(177.3), 4.2552, 1e-9);
        // 0.024 * 300 + 0.11 * 122.7 = 7.2 + 13.497
        near(delay_impairment(300.0), 20.697, 1e-9);
    }

    #[test]
    fn codecs_without_loss() {
        // No delay at all: R is R0 - Is - Ie.
        let no_delay = |pt| {
            let mut i = quiet(pt);
            i.codec.delay_ms = 0.0;
            r_factor(&i)
        };
        near(no_delay(0), 93.2, 1e-9);
        near(no_delay(18), 82.2, 1e-9);
        near(mos_from_r(no_delay(18)), 4.10, 0.01);
        near(no_delay(4), 78.2, 1e-9);
        near(no_delay(3), 73.2, 1e-9);
        // G.711 with its 20 ms packetization: 93.2 - 0.48, MOS about 4.4.
        near(r_factor(&quiet(8)), 92.72, 1e-9);
        near(mos_from_r(r_factor(&quiet(0))), 4.40, 0.01);
    }

    #[test]
    fn loss_worked_by_hand() {
        // G.711 (PLC), 2 % random loss, 40 ms network delay, 5 ms jitter:
        //   d      = 40 + 2 * 5 + 20 = 70 ms        Id = 0.024 * 70 = 1.68
        //   Ie,eff = 0 + 95 * 2 / (2 + 25.1) = 7.0111
        //   R      = 93.2 - 1.68 - 7.0111 = 84.5089
        //   MOS    = 1 + 2.9578 + 84.5089 * 24.5089 * 15.4911 * 7e-6 = 4.1824
        let i = Inputs {
            loss_pct: 2.0,
            network_delay_ms: 40.0,
            jitter_ms: 5.0,
            codec: codec(Some(0)),
        };
        near(i.delay_ms(), 70.0, 1e-9);
        near(effective_ie(&i.codec, 2.0), 7.0111, 1e-4);
        near(r_factor(&i), 84.5089, 1e-4);
        near(mos_from_r(r_factor(&i)), 4.1824, 1e-4);
        // G.729, 5 % loss, nothing else but its 25 ms:
        //   Ie,eff = 11 + 84 * 5 / (5 + 19) = 28.5;  Id = 0.6
        //   R = 93.2 - 0.6 - 28.5 = 64.1, a poor call
        let g729 = Inputs {
            loss_pct: 5.0,
            ..quiet(18)
        };
        near(r_factor(&g729), 64.1, 1e-9);
        assert_eq!(Band::of(r_factor(&g729)), Band::Poor);
    }

    #[test]
    fn unknown_codecs_are_scored_as_g711_with_plc() {
        let opus = codec(Some(111));
        assert!(!opus.known);
        assert_eq!((opus.ie, opus.bpl, opus.delay_ms), (0.0, 25.1, 20.0));
        assert_eq!(codec(None).ie, 0.0);
        assert_eq!(codec(Some(9)).name, "G.722");
        assert!(codec(Some(9)).known);
    }

    #[test]
    fn total_loss_and_absurd_inputs_stay_in_range() {
        let all_lost = Inputs {
            loss_pct: 100.0,
            ..quiet(0)
        };
        let r = r_factor(&all_lost);
        assert!(r < 20.0, "{r}");
        assert!((1.0..=4.5).contains(&mos_from_r(r)));
        let silly = Inputs {
            loss_pct: 1e9,
            network_delay_ms: -5.0,
            jitter_ms: 1e9,
            codec: codec(Some(4)),
        };
        assert_eq!(mos_from_r(r_factor(&silly)), 1.0);
    }

    #[test]
    fn bands_follow_g107_categories() {
        let bands: Vec<&str> = [93.2, 80.0, 79.9, 70.0, 69.9, 60.0, 59.9, -3.0]
            .iter()
            .map(|&r| Band::of(r).name())
            .collect();
        assert_eq!(
            bands,
            ["good", "good", "fair", "fair", "poor", "poor", "bad", "bad"]
        );
    }
}
