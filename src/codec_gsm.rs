//! GSM 06.10 full-rate encoding (RTP payload type 3) through the system
//! libgsm, for prompt files.

use std::ptr::NonNull;

/// Linear samples in one GSM frame (20 ms at 8 kHz).
pub const GSM_FRAME_SAMPLES: usize = 160;
/// Bytes in one encoded GSM frame, as RTP carries it (RFC 3551 §4.5.8).
pub const GSM_FRAME_BYTES: usize = 33;

/// libgsm's encoder state; only ever handled by pointer.
#[repr(C)]
struct GsmState {
    _opaque: [u8; 0],
}

#[link(name = "gsm")]
extern "C" {
    fn gsm_create() -> *mut GsmState;
    fn gsm_destroy(state: *mut GsmState);
    // libgsm declares the input non-const but only reads it.
    fn gsm_encode(state: *mut GsmState, source: *mut i16, frame: *mut u8);
}

/// One GSM 06.10 encoder; frames must be fed in order, it keeps history.
pub struct GsmEncoder {
    state: NonNull<GsmState>,
}

impl GsmEncoder {
    /// Creates an encoder; `None` when libgsm cannot allocate its state.
    pub fn new() -> Option<Self> {
        // SAFETY: gsm_create has no preconditions; it returns null on failure.
        let state = unsafe { gsm_create() };
        NonNull::new(state).map(|state| GsmEncoder { state })
    }

    /// Encodes the next 20 ms of 8 kHz linear PCM into one 33-byte frame.
    pub fn encode(&mut self, samples: &[i16; GSM_FRAME_SAMPLES]) -> [u8; GSM_FRAME_BYTES] {
        let mut input = *samples;
        let mut frame = [0u8; GSM_FRAME_BYTES];
        // SAFETY: the state is live (owned by self); gsm_encode reads exactly
        // 160 samples and writes exactly 33 bytes, the sizes of both arrays.
        unsafe { gsm_encode(self.state.as_ptr(), input.as_mut_ptr(), frame.as_mut_ptr()) };
        frame
    }
}

impl Drop for GsmEncoder {
    fn drop(&mut self) {
        // SAFETY: the state came from gsm_create and is destroyed only here.
        unsafe { gsm_destroy(self.state.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_carries_the_gsm_signature() {
        let mut encoder = GsmEncoder::new().unwrap();
        let mut samples = [0i16; GSM_FRAME_SAMPLES];
        for (i, s) in samples.iter_mut().enumerate() {
            *s = ((i as f64 * std::f64::consts::TAU / 8.0).sin() * 8000.0) as i16;
        }
        for _ in 0..5 {
            let frame = encoder.encode(&samples);
            // The top nibble of a packed frame is the GSM magic 0xD.
            assert_eq!(frame[0] >> 4, 0xD);
        }
    }
}
