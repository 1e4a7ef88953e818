//! The recording reader (extractaudio's input): ad-hoc and PCAP files,
//! whatever their bytes; every packet read back lies inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtpproxy::rtpp_record_reader::read_recording;

fuzz_target!(|data: &[u8]| {
    let Ok(packets) = read_recording(data) else {
        return;
    };
    let total: usize = packets.iter().map(|p| p.data.len()).sum();
    assert!(
        total <= data.len(),
        "read back more bytes than the file has"
    );
});
