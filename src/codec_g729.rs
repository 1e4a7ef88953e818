//! G.729 Annex A encoding (RTP payload type 18) through the system bcg729
//! library, for prompt files.

use std::ptr::NonNull;

/// Linear samples in one G.729 frame (10 ms at 8 kHz).
pub const G729_FRAME_SAMPLES: usize = 80;
/// Bytes in one encoded G.729 speech frame.
pub const G729_FRAME_BYTES: usize = 10;

/// bcg729's encoder channel context; only ever handled by pointer.
#[repr(C)]
struct Bcg729Encoder {
    _opaque: [u8; 0],
}

#[link(name = "bcg729")]
extern "C" {
    fn initBcg729EncoderChannel(enable_vad: u8) -> *mut Bcg729Encoder;
    fn closeBcg729EncoderChannel(context: *mut Bcg729Encoder);
    fn bcg729Encoder(
        context: *mut Bcg729Encoder,
        input_frame: *const i16,
        bit_stream: *mut u8,
        bit_stream_length: *mut u8,
    );
}

/// One G.729 encoder channel; frames must be fed in order, it keeps history.
pub struct G729Encoder {
    context: NonNull<Bcg729Encoder>,
}

impl G729Encoder {
    /// Creates an encoder with VAD/DTX off, so every frame is a full 10-byte
    /// speech frame (prompt files are played back at a fixed frame size);
    /// `None` when bcg729 cannot allocate its context.
    pub fn new() -> Option<Self> {
        // SAFETY: no preconditions; returns null on allocation failure.
        let context = unsafe { initBcg729EncoderChannel(0) };
        NonNull::new(context).map(|context| G729Encoder { context })
    }

    /// Encodes the next 10 ms of 8 kHz linear PCM into one 10-byte frame;
    /// `None` if the library produced anything else.
    pub fn encode(
        &mut self,
        samples: &[i16; G729_FRAME_SAMPLES],
    ) -> Option<[u8; G729_FRAME_BYTES]> {
        let mut frame = [0u8; G729_FRAME_BYTES];
        let mut length = 0u8;
        // SAFETY: the context is live (owned by self); bcg729Encoder reads 80
        // samples and writes at most 10 bytes plus the length byte.
        unsafe {
            bcg729Encoder(
                self.context.as_ptr(),
                samples.as_ptr(),
                frame.as_mut_ptr(),
                &mut length,
            )
        };
        (usize::from(length) == G729_FRAME_BYTES).then_some(frame)
    }
}

impl Drop for G729Encoder {
    fn drop(&mut self) {
        // SAFETY: the context came from initBcg729EncoderChannel and is
        // closed only here.
        unsafe { closeBcg729EncoderChannel(self.context.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_tone_give_full_frames() {
        let mut encoder = G729Encoder::new().unwrap();
        let silence = [0i16; G729_FRAME_SAMPLES];
        let mut tone = [0i16; G729_FRAME_SAMPLES];
        for (i, s) in tone.iter_mut().enumerate() {
            *s = ((i as f64 * std::f64::consts::TAU / 8.0).sin() * 8000.0) as i16;
        }
        assert!(encoder.encode(&silence).is_some());
        let frames: Vec<_> = (0..4).map(|_| encoder.encode(&tone).unwrap()).collect();
        assert!(frames.iter().any(|f| f.iter().any(|&b| b != 0)));
    }
}
